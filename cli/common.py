"""Shared CLI plumbing: consoles, how errors end a command, running coroutines, JSON output.

How a command ends when something goes wrong (issue 9), whatever the command:
- a PylonError: one red line `error: <what happened>` on stderr, a second `hint: <what to do>`
  line when the error has a hint, and the error's exit code (pylon.errors has the table);
- Ctrl-C: one line, exit 130;
- anything else is a bug: one line saying so and naming the file the full traceback was
  written to (PYLON_HOME/crash/ or the temp folder), exit 70; `-v`/`--verbose` (on the
  command, or `pylon -v COMMAND`) prints the traceback too.
`PylonGroup` does this for every command of the `pylon` app; `handle_errors` does the same
for a command function called on its own (tests that invoke a sub-app).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable, NoReturn, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from cli.defaults import fill_effective
from cli.term import EXIT_BROKEN_PIPE, make_console, stdout_to_devnull  # 141: the reader of stdout left early
from pylon.errors import EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED, ConfigError, PylonError

console = make_console()  # no wrapping off a terminal; NO_COLOR respected (cli.term)
err_console = make_console(stderr=True)
T = TypeVar("T")

_verbose = False


def set_verbose(on: bool = True) -> None:
    """Show full tracebacks for bugs (set by -v/--verbose)."""
    global _verbose
    _verbose = _verbose or on


def _line(prefix: str, text: str) -> None:
    # soft_wrap: one logical line stays one line when stderr is a pipe (rich wraps at 80 otherwise)
    err_console.print(f"{prefix} {escape(text)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1, hint: str = "") -> NoReturn:
    """One red line on stderr (and a hint line) and a non-zero exit: how every expected failure ends."""
    _line("[bold red]error:[/]", " ".join(message.split("\n")))
    if hint:
        _line("[dim]hint:[/]", hint)
    raise typer.Exit(code)


def crash_report(exc: BaseException) -> Path | None:
    """Write `exc`'s traceback to a new file (mode 0600) and return its path, None if nowhere is writable.

    PYLON_HOME/crash/ when PYLON_HOME exists (a crash never creates it), else the temp folder."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folders: list[Path] = []
    home = os.environ.get("PYLON_HOME") or str(Path.home() / ".config" / "pylon")
    if Path(home).expanduser().is_dir():
        folders.append(Path(home).expanduser() / "crash")
    folders.append(Path(tempfile.gettempdir()))
    for folder in folders:
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f"pylon-crash-{stamp}-", suffix=".txt", dir=folder)  # mode 0600
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return Path(path)
        except OSError:
            continue
    return None


def exit_for(exc: BaseException) -> NoReturn:
    """End the command for `exc` as described above (raises typer.Exit)."""
    if isinstance(exc, PylonError):
        message, hint = exc.parts()
        fail(message, exc.exit_code, hint)
    if isinstance(exc, Terminated):
        _line("[yellow]terminated[/]", "(SIGTERM)")
        raise typer.Exit(EXIT_TERMINATED)
    if isinstance(exc, KeyboardInterrupt):
        _line("[yellow]interrupted[/]", "(Ctrl-C)")
        raise typer.Exit(EXIT_INTERRUPTED)
    if isinstance(exc, BrokenPipeError):  # `pylon … | head`: the reader left; nothing to report
        stdout_to_devnull()
        raise typer.Exit(EXIT_BROKEN_PIPE)
    if _verbose:
        err_console.print(escape("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))),
                          highlight=False, soft_wrap=True, end="")
    where = crash_report(exc)
    what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    seen = f"the traceback is in {where}" if where is not None else "no file could be written for the traceback"
    _line("[bold red]bug:[/]", f"{what} — this is a bug in Pylon; {seen}"
          + ("" if _verbose else " (-v shows it)") + "; please report it")
    raise typer.Exit(EXIT_BUG)


try:  # typer >= 0.17 carries its own click
    from typer._click.exceptions import ClickException as _ClickException
    from typer._click.exceptions import NoSuchOption as _NoSuchOption
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover - older typer on the real click
    from click.exceptions import ClickException as _ClickException  # type: ignore[assignment]
    from click.exceptions import NoSuchOption as _NoSuchOption  # type: ignore[assignment]
    from click.exceptions import UsageError as _UsageError  # type: ignore[assignment]

_PASS_THROUGH = (typer.Exit, typer.Abort, _ClickException)


def _ours(exc: BaseException) -> bool:
    """Exceptions typer itself turns into an exit (usage errors, --help, typer.Exit, Abort)."""
    return isinstance(exc, _PASS_THROUGH)


# Options several commands share: one definition each (a typer OptionInfo may be reused).
RelayOpt = typer.Option(None, "--relay", "-r", help="Relay URL (repeatable).")
WalletFileOpt = typer.Option(None, "--wallet-file", metavar="PATH", show_default=False,
                             help="File holding the wallet URI (keeps it out of ps).")


def pubkey_option(flag: str, value: str | None) -> str | None:
    """A public key given on the command line (npub or hex) as hex, or a ConfigError naming the
    flag: a mistyped npub or an nsec in the wrong place is one line, before any relay is contacted."""
    if value is None:
        return None
    from pylon.nostr.errors import InvalidKey
    from pylon.nostr.keys import normalize_pubkey

    try:
        return normalize_pubkey(value)
    except InvalidKey as exc:
        message, hint = exc.parts()
        raise ConfigError(f"{flag}: {message}", hint=hint) from None


def check_wallet_uri(uri: str | None) -> None:
    """A wallet URI with a scheme no wallet takes is a usage error (exit 2, `wallet.check_uri`),
    found before anything starts; the rest of the URI is checked when the wallet opens."""
    if uri and uri.strip():
        from wallet import check_uri

        check_uri(uri)


def handle_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Map PylonError to one red line, Ctrl-C to exit 130, anything else to the bug line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if kwargs.get("verbose"):
            set_verbose()
        try:
            return func(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as exc:
            if _ours(exc):
                raise
            exit_for(exc)

    return wrapper


class PylonGroup(TyperGroup):
    """The `pylon` app's group: every subcommand's errors end as `exit_for` says."""

    def invoke(self, ctx: Any) -> Any:
        global _verbose
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        _verbose = any(a in ("-v", "--verbose") for a in args[: args.index("--") if "--" in args else None])
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:
            negative = _negative_number(exc)
            if negative is not None:
                raise negative from None
            if _ours(exc):
                raise
            exit_for(exc)


def _negative_number(exc: BaseException) -> Exception | None:
    """click reads `pylon wallet fund -5` as an unknown option -5: say what it is instead."""
    import re

    if isinstance(exc, _NoSuchOption) and re.fullmatch(r"-\d[\d_.]*", exc.option_name or ""):
        return _UsageError(f"{exc.option_name} is a negative number: amounts, counts and limits here are "
                           "0 or more", ctx=exc.ctx)
    return None


class PylonCommand(TyperCommand):
    """A command whose help may show effective defaults (cli.defaults.effective): they are
    filled in when help is printed, so running the command never reads the settings for them."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            help_text = getattr(param, "help", None)
            if help_text:
                param.help = fill_effective(help_text)  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a command: ends it the way Ctrl-C does (the job in flight is cancelled,
    its kind-5 published), with its own line and exit code."""


async def _cancelled_by_sigterm(coro: Awaitable[T]) -> T:
    """`coro`, whose task SIGTERM cancels as asyncio cancels it for Ctrl-C; then Terminated."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, not the main thread)
        return await coro
    try:
        return await coro
    except (asyncio.CancelledError, PylonError):  # an ask turns its cancellation into JobCancelled
        if terminated:
            raise Terminated() from None
        raise
    finally:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGTERM)


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine. SIGTERM (a `timeout`, a supervisor, `kill`) ends it as Ctrl-C
    does (the work in flight is cancelled and cleans up: an ask publishes its cancellation)
    instead of killing the process mid-job; servers set their own handlers (`stop_on_signals`),
    which replace this one."""
    return asyncio.run(_cancelled_by_sigterm(coro))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    level = logging.DEBUG if verbose else logging.INFO
    # Neither format names the source line, the thread or the process: skip working them out
    # for every record (the logging docs' "Optimization" section; a provider logs one line a job)
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
