"""Which event ids the relay certainly has not stored, without reading the database.

Every EVENT is checked for being a duplicate before it is verified and fanned out. Nearly all
of them are new, and the database read that says so cost 50-110 us on this machine: the
reader's page cache is dropped by every commit of the writer thread, and the first read after
an fsync'ed commit pays for it (measured with `PRAGMA synchronous=FULL`; ~12 us without).
That was the largest single step of an event's path through the relay at one job at a time.

`IdFilter` is a Bloom filter over the ids the store holds. "No" is certain, so the read is
skipped; "maybe" (a true duplicate, or a false positive about 1 time in 400) reads the
database as before; with several parts the rates add up, still under 1 % at a million
stored events. Deleted or purged ids stay in the filter: only a needless read, never a
wrong answer. An event id is a SHA-256, uniformly random, so its own bits are the hash
positions. Full parts are not rebuilt: the filter grows by adding a part of twice the size
(a scalable Bloom filter), so no add ever has to read every stored id again. About 2 bytes
per stored event.

Threads: the writer thread adds (after inserting), the event loop asks. An id is added
before its commit is reported to the loop, and until then the loop holds it as in flight
(NexusRelay._inflight), so the loop never asks about a stored id the filter lacks. The filter
is filled from the database on a thread of its own (EventStore.load_ids) and only then put in
use, with the ids the writer stored meanwhile.
"""

from __future__ import annotations

_BITS_PER_ID = 16   # with 4 positions: ~0.24 % false positives in a full part
MIN_CAPACITY = 1 << 16  # ~128 KB: a fresh relay's first part


class IdFilter:
    """A Bloom filter over 64-hex event ids that grows by parts; `capacity`: ids the first
    part holds before the next (twice as large) is started."""

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        self._parts: list[tuple[bytearray, int]] = []  # (bits, position mask), newest last
        self._capacity = 0
        self._in_newest = 0
        self._add_part(max(int(capacity), 8))

    def _add_part(self, capacity: int) -> None:
        nbits = 1 << max(capacity * _BITS_PER_ID - 1, 1).bit_length()  # a power of two: positions are masks
        self._parts.append((bytearray(nbits // 8), nbits - 1))
        self._capacity = capacity
        self._in_newest = 0

    @staticmethod
    def _positions(event_id: str) -> int:
        return int(event_id[:32], 16)  # 128 bits: four 32-bit positions

    def add(self, event_id: str) -> None:
        """Remember `event_id` (64 hex characters) as stored."""
        if self._in_newest >= self._capacity:
            self._add_part(self._capacity * 2)
        bits, mask = self._parts[-1]
        h = self._positions(event_id)
        for _ in range(4):
            p = h & mask
            bits[p >> 3] |= 1 << (p & 7)
            h >>= 32
        self._in_newest += 1

    def may_contain(self, event_id: str) -> bool:
        """False only when `event_id` was never added."""
        try:
            h0 = self._positions(event_id)
        except ValueError:
            return True  # not hex: let the database answer
        for bits, mask in self._parts:
            h = h0
            for _ in range(4):
                p = h & mask
                if not bits[p >> 3] >> (p & 7) & 1:
                    break
                h >>= 32
            else:
                return True
        return False

    @property
    def parts(self) -> int:
        return len(self._parts)
