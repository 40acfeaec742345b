"""A provider that floods a job with partial feedback: the client's buffers stay bounded and
the job ends with ProviderFlood (one clear error), whatever order the partials come in."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from pylon.customer.inbox import MAX_PENDING_BYTES, PartialBuffer, ProviderFlood
from pylon.jobs.nip90 import KIND_REQUEST, JobFeedback, JobRequest
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.abuse.harness import rss_mb
from tests.e2e.helpers import customer

pytestmark = pytest.mark.timeout(120)


def test_partial_buffer_reassembles_in_any_order():
    buf = PartialBuffer()
    text = "the quick brown fox jumps"
    chunks = [(0, text[:4]), (4, text[4:10]), (10, text[10:16]), (16, text[16:])]
    have = ""
    for offset, chunk in reversed(chunks):  # worst order: everything waits for the first
        buf.add(offset, chunk, "p" * 64)
        have += buf.take(len(have))
    assert have == text and len(buf) == 0 and buf.bytes == 0
    buf.add(2, text[2:8], "p" * 64)  # stale overlap: only what extends the text is used
    assert buf.take(len(have)) == "" and len(buf) == 0


def test_partial_buffer_bounds():
    buf = PartialBuffer(max_chunks=3)
    for i in range(3):
        buf.add(10 + i, "x", "p" * 64)
    with pytest.raises(ProviderFlood, match="out-of-order partials"):
        buf.add(20, "x", "p" * 64)
    big = PartialBuffer()
    with pytest.raises(ProviderFlood, match="bytes"):
        for i in range(100):
            big.add(1 + i * 100_000, "y" * 100_000, "p" * 64)
    assert big.bytes <= MAX_PENDING_BYTES


async def _flooding_provider(relay_url: str, keys: Keys, *, in_order: bool, count: int, size: int,
                             ready: asyncio.Event) -> None:
    """Answers the first job it sees with `count` partials of `size` characters."""
    async with RelayPool([relay_url], keys=keys) as pool:
        sub = pool.subscribe([Filter.of(kinds=[KIND_REQUEST], limit=0)])
        await sub.open()
        ready.set()
        async for event in sub:
            request = JobRequest.from_event(event, keys)
            chunk = "z" * size
            for i in range(count):
                offset = i * size if in_order else (i + 1) * size  # never contiguous: all wait
                ev = JobFeedback.build(keys, request, "partial", content=chunk, offset=offset)
                await pool.publish(ev, timeout=10)
            return


@pytest.mark.parametrize("in_order", [False, True], ids=["out-of-order", "in-order"])
async def test_flooding_provider_ends_the_job_with_a_clear_error(relay_url, in_order):
    keys = Keys.generate()
    ready = asyncio.Event()
    # out of order: 2 MiB of waiting chunks is the bound (~70 chunks of 30 KB);
    # in order: 4 M characters of streamed text (~140 chunks)
    flood = asyncio.create_task(_flooding_provider(relay_url, keys, in_order=in_order, count=400,
                                                   size=30_000, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    before = rss_mb(os.getpid())
    try:
        async with customer(relay_url) as client:
            with pytest.raises(ProviderFlood) as err:
                await client.ask("flood me", provider=keys.public_key, timeout=30)
        assert keys.public_key[:12] in str(err.value)
    finally:
        flood.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await flood
    grown = rss_mb(os.getpid()) - before
    print(f"client RSS growth during the flood: {grown:.1f} MB")
    assert grown < 120  # bounded (the unbounded client grew by ~300 MB on 10k x 30 KB)
