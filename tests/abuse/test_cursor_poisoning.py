"""Cursor poisoning: a stranger's request dated ahead of now (relays accept up to 15 min)
must not move the provider's resume cursor into the future, or the restarted provider
subscribes from the future and is deaf to every honest request until the clock catches up."""

from __future__ import annotations

import time

import pytest

from pylon.jobs.nip90 import JobRequest
from pylon.nostr.keys import Keys
from pylon.provider.jobstore import JobStore
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import customer, serving, wait_for

pytestmark = pytest.mark.timeout(120)


def test_job_store_cursor_never_passes_now(tmp_path):
    store = JobStore(tmp_path / "p.sqlite")
    try:
        now = int(time.time())
        store.record_seen("a" * 64, "b" * 64, now + 850, "{}")
        assert store.last_request_created_at() <= int(time.time())
    finally:
        store.close()


def test_a_poisoned_stored_cursor_is_reset_at_start_up(tmp_path):
    store = JobStore(tmp_path / "p.sqlite")
    store._db.execute("INSERT INTO meta(key, value) VALUES('last_request_created_at', ?)",
                      (str(int(time.time()) + 86_400),))  # as written by a version before the clamp
    store.close()
    reopened = JobStore(tmp_path / "p.sqlite")
    try:
        assert reopened.last_request_created_at() <= int(time.time())
        # and the stored row itself was repaired: the upsert's MAX() cannot keep the bad value
        reopened.record_seen("c" * 64, "d" * 64, int(time.time()) - 5, "{}")
        row = reopened._db.execute("SELECT value FROM meta WHERE key='last_request_created_at'").fetchone()
        assert int(row[0]) <= int(time.time())
    finally:
        reopened.close()


async def test_restarted_provider_still_answers_after_a_future_dated_request(relay_url, openai_double, tmp_path):
    db = tmp_path / "p.sqlite"
    keys = Keys.generate()
    async with serving(relay_url, openai_double.base_url, db, keys=keys) as provider:
        stranger = Keys.generate()
        poisoned = JobRequest(messages=[{"role": "user", "content": "from the future"}], max_tokens=5)
        event = poisoned.to_event(stranger, created_at=int(time.time()) + 800)
        async with RelayPool([relay_url], keys=stranger) as pool:
            await pool.publish(event, timeout=10)
        await wait_for(lambda: provider.store is not None and provider.store.status(event.id) is not None,
                       what="the provider to see the future-dated request")
    async with serving(relay_url, openai_double.base_url, db, keys=keys):
        async with customer(relay_url) as client:
            outcome = await client.ask("still there?", max_tokens=10, timeout=30)
    assert outcome.text


async def test_pool_resubscribes_from_now_after_a_future_dated_event():
    """The pool's live subscription sees a stranger's event dated 800 s ahead, then loses
    its connection; after the reconnect it must still receive an honest event dated now."""
    import asyncio
    import contextlib

    from nexus_relay import running_relay
    from pylon.nostr.event import Event
    from pylon.nostr.filters import Filter

    async with running_relay() as relay:
        async with RelayPool([relay.url]) as pool:
            sub = pool.subscribe([Filter.of(kinds=[1], t=["cursor-test"])])
            await sub.open()
            await sub.wait_eose(10)
            stranger = Keys.generate()
            future = Event.build(stranger, 1, "from the future", [["t", "cursor-test"]],
                                 created_at=int(time.time()) + 800)
            async with RelayPool([relay.url]) as other:
                await other.publish(future, timeout=10)
                got = await asyncio.wait_for(sub.__anext__(), 10)
                assert got.id == future.id
                for conn in list(relay.connections):  # drop the subscriber's connection
                    if conn.subs:
                        await conn.ws.close()
                deadline = time.monotonic() + 20
                received = None
                while received is None and time.monotonic() < deadline:
                    # a fresh honest event (dated now) each second until the pool is back
                    honest = Event.build(Keys.generate(), 1, "honest, dated now", [["t", "cursor-test"]])
                    await other.publish(honest, timeout=10)
                    with contextlib.suppress(asyncio.TimeoutError):
                        received = await asyncio.wait_for(sub.__anext__(), 1.0)
                assert received is not None and received.content == "honest, dated now"
