"""Shared CLI plumbing: consoles, error mapping, running coroutines, JSON output."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
from typing import Any, Awaitable, Callable, TypeVar

import typer
from rich.console import Console

from cli.term import make_console
from pylon.errors import PylonError

console = make_console()  # no wrapping off a terminal; NO_COLOR respected (cli.term)
err_console = make_console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> None:
    """One red line on stderr and a non-zero exit: how every expected failure ends."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def handle_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Map PylonError to one red line; Ctrl-C to exit 130 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except PylonError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130)
        raise AssertionError("unreachable")

    return wrapper


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if log_format == "json":
        from pylon.ops.logfmt import JsonFormatter  # lazy: only servers use it

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so long-running servers stop cleanly (call inside the loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    return stop
