"""The relay's filter of stored ids (nexus_relay.idfilter): "no" is always right, so a new
event skips the database read, and a duplicate is still found, after a restart too."""

from __future__ import annotations

import os
import random

import pytest

from nexus_relay import running_relay
from nexus_relay.idfilter import IdFilter
from pylon.nostr.keys import Keys
from tests.e2e.helpers import wait_for
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


async def _loaded(store) -> None:
    """The filter is loaded off the start path (EventStore.load_ids)."""
    await wait_for(lambda: store.ids_loaded, timeout=10, what="the filter of stored ids")


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
        await _loaded(relay.store)
        reads = _count_reads(relay.store)
        async with RawClient(relay.url) as client:
            for ev in stored:
                await client.send(["EVENT", ev.to_dict()])
                ok = await client.recv_type("OK", timeout=10)
                assert ok[1:3] == [ev.id, True] and ok[3] == ""
        lookups = [s for s in reads if "FROM events WHERE id" in s]
        assert len(lookups) <= 2, lookups  # 20 new events; a read only on a (rare) false positive
    async with running_relay(db) as relay:  # a fresh process: the filter is loaded from the file
        await _loaded(relay.store)
        assert all(relay.store.has(ev.id) for ev in stored)
        assert not relay.store.has(os.urandom(32).hex())
        async with RawClient(relay.url) as client:
            await client.send(["EVENT", stored[7].to_dict()])
            ok = await client.recv_type("OK", timeout=10)
            assert ok[1:3] == [stored[7].id, True] and ok[3].startswith("duplicate:")


def test_ids_stored_while_the_filter_loads_are_in_it(tmp_path):
    """The writer may store events before the load is done: those go in too, and until then
    every lookup reads the database (never a wrong "no")."""
    from nexus_relay.store import EventStore

    keys = Keys.generate()
    earlier, meanwhile = note(keys, "before this start"), note(keys, "while the filter loads")
    store = EventStore(tmp_path / "relay.sqlite")
    store.open()
    _commit(store, earlier)
    store.close()

    store = EventStore(tmp_path / "relay.sqlite")
    store.open()
    try:
        # the loader's read began (its snapshot) before `meanwhile` was committed, as when the
        # writer stores events while a large database is being read
        snapshot = store.connect_reader()
        snapshot.execute("BEGIN")
        assert snapshot.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
        store.connect_reader = lambda: snapshot  # type: ignore[method-assign]
        _commit(store, meanwhile)  # not in that snapshot: only the writer's ids kept aside have it
        assert not store.ids_loaded and store.has(earlier.id) and store.has(meanwhile.id)
        store.load_ids()
        assert store.ids_loaded
        reads = _count_reads(store)
        assert store.has(earlier.id) and store.has(meanwhile.id)
        assert len(reads) == 2  # "maybe": both confirmed by the database
        assert not any(store.has(os.urandom(32).hex()) for _ in range(50))
        assert len(reads) <= 3  # fifty new ids: answered by the filter (a false positive reads)
    finally:
        store.close()


def _commit(store, event) -> None:
    from nexus_relay.store import PendingWrite

    store._w.execute("BEGIN IMMEDIATE")
    store._write_batch([PendingWrite(event, event.to_json())])
    store._w.execute("COMMIT")
