"""The relay's filter of stored ids (nexus_relay.idfilter): "no" is always right, so a new
event skips the database read, and a duplicate is still found, after a restart too."""

from __future__ import annotations

import os
import random

import pytest

from nexus_relay import running_relay
from nexus_relay.idfilter import IdFilter
from pylon.nostr.keys import Keys
from tests.relay.helpers import RawClient, note

pytestmark = [pytest.mark.timeout(60), pytest.mark.embedded_relay]


def _ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.randbytes(32).hex() for _ in range(n)]


def test_every_added_id_is_found_across_growth():
    filt = IdFilter(capacity=100)  # small parts: 5,000 ids span several of them
    added = _ids(5_000, seed=1)
    for i, event_id in enumerate(added):
        filt.add(event_id)
        if i % 500 == 0:  # found at every size, not only at the end
            assert all(filt.may_contain(x) for x in added[: i + 1])
    assert filt.parts >= 5
    assert all(filt.may_contain(x) for x in added)


def test_false_positives_are_rare():
    filt = IdFilter(capacity=4_096)
    for event_id in _ids(4_096, seed=2):
        filt.add(event_id)
    others = _ids(20_000, seed=3)
    positives = sum(filt.may_contain(x) for x in others)
    assert positives < 20_000 * 0.02  # ~0.24 % expected in a full part; 2 % would mean it is broken


def test_a_string_that_is_not_hex_goes_to_the_database():
    assert IdFilter().may_contain("not an event id")


def _count_reads(store) -> list[str]:
    """Statements run on the loop's read connection (SQLite's own trace of what executed)."""
    seen: list[str] = []
    store._r.set_trace_callback(seen.append)
    return seen


async def test_new_events_skip_the_read_and_duplicates_are_found_after_a_restart(tmp_path):
    db = tmp_path / "relay.sqlite"
    keys = Keys.generate()
    stored = [note(keys, f"stored {i}") for i in range(20)]
    async with running_relay(db) as relay:
        reads = _count_reads(relay.store)
        async with RawClient(relay.url) as client:
            for ev in stored:
                await client.send(["EVENT", ev.to_dict()])
                ok = await client.recv_type("OK", timeout=10)
                assert ok[1:3] == [ev.id, True] and ok[3] == ""
        lookups = [s for s in reads if "FROM events WHERE id" in s]
        assert len(lookups) <= 2, lookups  # 20 new events; a read only on a (rare) false positive
    async with running_relay(db) as relay:  # a fresh process: the filter is loaded from the file
        assert all(relay.store.has(ev.id) for ev in stored)
        assert not relay.store.has(os.urandom(32).hex())
        async with RawClient(relay.url) as client:
            await client.send(["EVENT", stored[7].to_dict()])
            ok = await client.recv_type("OK", timeout=10)
            assert ok[1:3] == [stored[7].id, True] and ok[3].startswith("duplicate:")
