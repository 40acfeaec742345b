"""When a provider sends `partial` feedback while a job generates: the first text at once,
then the text since the last partial, coalesced by time and size.

Each partial is one signed event through the relay, so sending every token would cost a
Schnorr signature and a relay round per token; sending every 250 ms made the first chunk of
an answer wait a quarter of a second and left DSPy's stream listeners with nothing to show.
So: the first text goes out as soon as the backend produces it (time to first token stays
the backend's plus one relay hop), later text waits until `interval_s` has passed since the
last partial or `max_chars` are pending. The final result always carries the whole text.
"""

from __future__ import annotations

DEFAULT_INTERVAL_S = 0.05
DEFAULT_MAX_CHARS = 2048


class PartialCoalescer:
    """Feed it text deltas; it says which partials to send now, as (text, offset) pairs."""

    __slots__ = ("interval_s", "max_chars", "_pending", "_pending_chars", "_sent", "_last")

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if interval_s < 0 or max_chars < 1:
            raise ValueError("partial interval must be >= 0 seconds and max_chars >= 1")
        self.interval_s = interval_s
        self.max_chars = max_chars
        self._pending: list[str] = []
        self._pending_chars = 0
        self._sent = 0            # characters already sent (the next partial's offset)
        self._last: float | None = None  # when the last partial went out (None: none yet)

    def push(self, text: str, now: float) -> tuple[str, int] | None:
        """Add `text`; returns the partial to send now (delta, offset), or None to wait."""
        if not text:
            return None
        self._pending.append(text)
        self._pending_chars += len(text)
        due = (self._last is None or now - self._last >= self.interval_s
               or self._pending_chars >= self.max_chars)
        if not due:
            return None
        delta = "".join(self._pending)
        offset = self._sent
        self._pending.clear()
        self._pending_chars = 0
        self._sent += len(delta)
        self._last = now
        return delta, offset
