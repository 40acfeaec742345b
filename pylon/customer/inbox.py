"""Bounded per-job buffers on the client: a provider cannot grow the customer's memory.

A job's replies arrive from strangers. Unbounded, 10,000 partials of 30 KB took a client
from 50 to 361 MB, and out-of-order partials were re-sorted on every event. Here:

- `JobInbox`: the job's reply queue, bounded in events and bytes. Past either bound the
  job fails with `ProviderFlood` (which provider, which bound) instead of buffering on.
- `PartialBuffer`: out-of-order `partial` chunks keyed by offset, bounded in chunks and
  bytes, with a heap of offsets (O(log n) per chunk, no sort per event).
- `MAX_STREAM_CHARS`: the streamed text of one job (far above any max_tokens a provider
  serves; the result event itself is at most the relay's 64 KB).
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from pylon.errors import ProviderError

MAX_REPLIES = 1024  # events queued for one job (the ask loop drains them as they come)
MAX_REPLY_BYTES = 8 << 20  # their content, summed
MAX_PENDING_PARTIALS = 256  # out-of-order partial chunks waiting for the gap before them
MAX_PENDING_BYTES = 2 << 20
MAX_STREAM_CHARS = 4 << 20  # streamed text of one job
EVENT_OVERHEAD = 256  # bytes an event costs beyond its content (id, sig, tags)


class ProviderFlood(ProviderError):
    """A provider sent a job more than the client buffers; the job stops listening to it."""

    def __init__(self, provider: str, what: str) -> None:
        super().__init__(f"provider {provider[:12]}… flooded the job ({what}); stopped",
                         {provider: f"flood: {what}"},
                         hint="ask another provider (--provider), or report this one")
        self.provider = provider


class JobInbox(asyncio.Queue):
    """One job's replies. `offer(event)` from the dispatcher; the ask loop `get()`s as usual.

    Over a bound, the queue is emptied and a ProviderFlood is queued instead: the ask loop
    raises exceptions it gets, so the job ends with that error at once."""

    def __init__(self, max_items: int = MAX_REPLIES, max_bytes: int = MAX_REPLY_BYTES) -> None:
        super().__init__()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self.flood: ProviderFlood | None = None

    def offer(self, event: Any) -> None:
        if self.flood is not None:
            return
        size = len(event.content) + EVENT_OVERHEAD
        if self.qsize() >= self.max_items:
            self._flooded(event.pubkey, f"over {self.max_items} replies waiting")
        elif self.bytes + size > self.max_bytes:
            self._flooded(event.pubkey, f"over {self.max_bytes} bytes of replies waiting")
        else:
            self.bytes += size
            self.put_nowait(event)

    def _flooded(self, provider: str, what: str) -> None:
        self.flood = ProviderFlood(provider, what)
        while not self.empty():
            self.get_nowait()
        self.bytes = 0
        self.put_nowait(self.flood)

    def _get(self) -> Any:  # asyncio.Queue's hook: every get() and get_nowait() passes here
        item = super()._get()  # type: ignore[misc]
        if not isinstance(item, BaseException):
            self.bytes -= len(item.content) + EVENT_OVERHEAD
        return item


class PartialBuffer:
    """Out-of-order partial chunks by offset, bounded; `take(have)` returns the text that
    continues the `have` characters already streamed (stale chunks are dropped)."""

    __slots__ = ("_chunks", "_heap", "bytes", "max_chunks", "max_bytes")

    def __init__(self, max_chunks: int = MAX_PENDING_PARTIALS, max_bytes: int = MAX_PENDING_BYTES) -> None:
        self._chunks: dict[int, str] = {}
        self._heap: list[int] = []
        self.bytes = 0
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, offset: int, content: str, provider: str) -> None:
        if offset in self._chunks:
            return  # a duplicate (several relays deliver the same partial)
        if len(self._chunks) >= self.max_chunks:
            raise ProviderFlood(provider, f"over {self.max_chunks} out-of-order partials")
        if self.bytes + len(content) > self.max_bytes:
            raise ProviderFlood(provider, f"over {self.max_bytes} bytes of out-of-order partials")
        self._chunks[offset] = content
        self.bytes += len(content)
        heapq.heappush(self._heap, offset)

    def take(self, have: int) -> str:
        pieces: list[str] = []
        heap = self._heap
        while heap and heap[0] <= have:
            offset = heapq.heappop(heap)
            chunk = self._chunks.pop(offset)
            self.bytes -= len(chunk)
            if offset + len(chunk) > have:
                piece = chunk[have - offset:]
                pieces.append(piece)
                have += len(piece)
        return "".join(pieces)
