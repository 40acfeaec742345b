"""What `pylon ask` shows while it waits: one line per event, a live status with the time.

On a terminal (stderr) and unless `--quiet`: each event of the job (published, quote,
payment, error from a provider) is printed once as a dim line, and a spinner line below
says what is happening now with the elapsed time and the deadline ("waiting for a provider
· 3.2s of 120s"). Off a terminal nothing is shown: stdout stays the answer alone.
Streamed text goes to stdout as it arrives; the status line is then not drawn, so the two
never interleave.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.text import Text

from cli.common import err_console
from pylon.nostr.keys import npub_of


def short(pubkey: str | None) -> str:
    """A pubkey shortened for display, as the start of its npub (the form users copy into
    --provider and --avoid) and one ellipsis."""
    if not pubkey:
        return "?"
    shown = npub_of(pubkey)  # not a key (a malformed event) comes back as it was
    return f"{shown[:16]}…" if shown.startswith("npub1") else f"{pubkey[:10]}…"


class _StatusText:
    """Renders the current activity with the elapsed time, recomputed on every refresh."""

    def __init__(self, started: float, timeout: float | None) -> None:
        self.started = started
        self.timeout = timeout
        self.activity = "publishing the job"

    def __rich__(self) -> Text:
        elapsed = time.monotonic() - self.started
        limit = f" of {self.timeout:g}s" if self.timeout else ""
        return Text(f"{self.activity} · {elapsed:.1f}s{limit}")


class JobProgressView:
    """Renders pylon.customer.client.JobProgress events on stderr and streamed text on stdout."""

    def __init__(self, *, show: bool, stream: bool, timeout: float | None = None) -> None:
        self.show = show
        self.stream = stream
        self.chars = 0
        self.status: Any = None
        self.streamed_any = False
        self.last_provider: str | None = None  # who spoke last (for `pylon history` on failure)
        self.text = _StatusText(time.monotonic(), timeout)

    def start(self) -> None:
        self.text.started = time.monotonic()
        if self.show and not self.stream:
            self.status = err_console.status(self.text)
            self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def say(self, activity: str) -> None:
        """The live status line (no trailing ellipsis: the spinner already says "busy")."""
        self.text.activity = activity

    def line(self, text: str) -> None:
        """One printed line per event, above the status line."""
        if self.show and not self.stream:
            err_console.print(text, highlight=False)

    def __call__(self, p: Any) -> None:  # JobProgress
        if p.provider:
            self.last_provider = p.provider
        if p.stage == "published":
            self.line(f"[dim]→ {p.detail}[/]")
            self.say("waiting for a provider")
        elif p.stage == "quoted":
            self.line(f"[dim]→ quote from {short(p.provider)}: {p.amount_msat or 0} msat[/]")
        elif p.stage == "payment":
            self.line(f"[dim]→ {p.detail or f'paid {p.amount_msat or 0} msat'}[/]")
        elif p.stage == "processing":
            self.say(f"processing by {short(p.provider)}")
        elif p.stage == "partial":
            self.chars += len(p.text or "")
            self.say(f"receiving from {short(p.provider)}: {self.chars} chars")
        elif p.stage == "error":
            self.line(f"[yellow]→ {short(p.provider)}: {p.detail}[/]")
        elif p.stage == "done":
            self.say("done")

    def delta(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.streamed_any = True
