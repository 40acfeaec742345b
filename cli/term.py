"""Consoles that behave like gh/uv on and off a terminal.

Why: rich assumes 80 columns when output is not a terminal, so a piped answer or a table
written to a file was wrapped mid-phrase. Off a terminal, text is not wrapped (soft wrap)
and tables get room for their natural width; COLUMNS still wins when it is set. Colors
follow FORCE_COLOR (rich reads it) and NO_COLOR (https://no-color.org): with NO_COLOR set
nothing is styled at all, bold and dim included.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console

_WIDE = 4096  # "unbounded" for tables written to pipes and files
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a reader that left early (docs/ERRORS.md)


class PipeAwareConsole(Console):
    """rich ends the process with exit 1 when the reader of a pipe leaves (`pylon receipts |
    head -1`); Pylon's documented code for that is 141, as for its own writes (cli.common)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        stdout_to_devnull()
        raise SystemExit(EXIT_BROKEN_PIPE)


def stdout_to_devnull() -> None:
    """After the reader of stdout left: the interpreter's flush at exit finds /dev/null, not
    the closed pipe (no second BrokenPipeError printed on the way out)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_console(*, stderr: bool = False) -> Console:
    """A rich Console for stdout (or stderr) that never wraps text when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    # NO_COLOR: no escape codes at all (rich alone keeps bold and dim)
    plain: dict = {"color_system": None} if os.environ.get("NO_COLOR") else {}
    if _isatty(stream) or os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE"):
        return PipeAwareConsole(stderr=stderr, **plain)
    width = _WIDE if not os.environ.get("COLUMNS") else None
    return PipeAwareConsole(stderr=stderr, soft_wrap=True, width=width, **plain)
