"""RelayPool against the rust-nostr reference relay (nostr-sdk LocalRelay), nobody here wrote it."""

from __future__ import annotations

import asyncio
import time

import pytest

from pylon.errors import RelayError
from pylon.nostr import Event, Filter, Keys
from pylon.relay.pool import PublishError, RelayPool, SubscriptionClosed


async def test_publish_ok_then_duplicate_prefix(sdk_relay_url):
    keys = Keys.generate()
    event = Event.build(keys, 1, "hello from pylon")
    async with RelayPool([sdk_relay_url]) as pool:
        first = await pool.publish(event)
        assert first.event_id == event.id
        assert first.accepted_by == [sdk_relay_url]
        assert first.results[sdk_relay_url].prefix == ""
        again = await pool.publish(event)
        reply = again.results[sdk_relay_url]
        assert reply.accepted is True and reply.prefix == "duplicate"
        assert reply.message.startswith("duplicate:")


async def test_rejected_event_gives_typed_reply(sdk_relay_url):
    keys = Keys.generate()
    event = Event.build(keys, 1, "original")
    event.content = "changed after signing"  # id no longer matches: the relay must refuse it
    async with RelayPool([sdk_relay_url]) as pool:
        with pytest.raises(PublishError) as info:
            await pool.publish(event)
        reply = info.value.result.results[sdk_relay_url]
        assert reply.accepted is False and reply.prefix == "invalid"
        assert sdk_relay_url in str(info.value)
        assert isinstance(info.value, RelayError)


async def test_subscribe_stored_eose_then_live(sdk_relay_url):
    keys = Keys.generate()
    now = int(time.time())
    stored = [Event.build(keys, 1, f"stored {i}", created_at=now - 10 + i) for i in range(3)]
    async with RelayPool([sdk_relay_url]) as pool:
        for ev in stored:
            await pool.publish(ev)
        async with pool.subscribe([Filter.of(kinds=[1], authors=[keys.public_key])]) as sub:
            await sub.wait_eose()
            got = [await sub.next(timeout=5) for _ in range(3)]
            assert {e.id for e in got} == {e.id for e in stored}
            assert sub.pending_events() == 0
            live = Event.build(keys, 1, "live ünïcode ☕")
            await pool.publish(live)
            received = await sub.next(timeout=5)
            assert received.id == live.id and received.content == "live ünïcode ☕"
        assert sub.closed


async def test_many_subscriptions_share_one_connection(sdk_relay_url):
    keys = Keys.generate()
    async with RelayPool([sdk_relay_url]) as pool:
        subs = [pool.subscribe([Filter.of(kinds=[1000 + i], authors=[keys.public_key])]) for i in range(20)]
        for sub in subs:
            await sub.open()
        for sub in subs:
            await sub.wait_eose()
        events = [Event.build(keys, 1000 + i, f"k{i}") for i in range(20)]
        for ev in events:
            await pool.publish(ev)
        for sub, ev in zip(subs, events):
            assert (await sub.next(timeout=5)).id == ev.id
        assert sum(r.connections for r in pool._relays.values()) == 1
        for sub in subs:
            await sub.close()


async def test_query_dedupes_newest_first_and_count(sdk_relays):
    _, url_a = await sdk_relays.start()
    _, url_b = await sdk_relays.start()
    keys = Keys.generate()
    now = int(time.time())
    events = [Event.build(keys, 1, f"q{i}", created_at=now - 100 + i) for i in range(5)]
    async with RelayPool([url_a, url_b]) as pool:
        for ev in events:
            result = await pool.publish(ev, min_accepted=2)
            assert sorted(result.accepted_by) == sorted([url_a, url_b])
        found = await pool.query([Filter.of(authors=[keys.public_key])])
        assert [e.id for e in found] == [e.id for e in reversed(events)]
        assert await pool.count([Filter.of(authors=[keys.public_key])]) == {url_a: 5, url_b: 5}


async def test_dedupe_across_relays_happens_before_verification(sdk_relays, monkeypatch):
    _, url_a = await sdk_relays.start()
    _, url_b = await sdk_relays.start()
    keys = Keys.generate()
    events = [Event.build(keys, 1, f"d{i}") for i in range(10)]
    async with RelayPool([url_a, url_b]) as publisher:
        for ev in events:
            await publisher.publish(ev, min_accepted=2)
    verified: list[str] = []
    real_verify = Event.verify

    def counting_verify(self):
        verified.append(self.id)
        return real_verify(self)

    monkeypatch.setattr(Event, "verify", counting_verify)
    async with RelayPool([url_a, url_b]) as pool:
        async with pool.subscribe([Filter.of(authors=[keys.public_key])]) as sub:
            await sub.wait_eose()
            got = [await sub.next(timeout=5) for _ in range(10)]
            assert sub.pending_events() == 0
    assert sorted(e.id for e in got) == sorted(e.id for e in events)
    assert sorted(verified) == sorted(e.id for e in events)  # each verified once, not twice
    assert pool.stats["duplicates"] == 10


async def test_nip42_auth_against_rust_relay(sdk_relays):
    _, url = await sdk_relays.start(auth=True)
    keys = Keys.generate()
    event = Event.build(keys, 1, "needs auth")
    async with RelayPool([url]) as anonymous:
        with pytest.raises(PublishError) as info:
            await anonymous.publish(event, timeout=5)
        assert info.value.result.results[url].prefix == "auth-required"
        sub = anonymous.subscribe([Filter.of(kinds=[1])])
        async with sub:
            with pytest.raises(SubscriptionClosed) as closed:
                await sub.next(timeout=5)
        assert closed.value.reasons[url].startswith("auth-required:")
    async with RelayPool([url], keys=keys) as pool:
        result = await pool.publish(event, timeout=5)
        assert result.accepted_by == [url]
        assert [e.id for e in await pool.query([Filter.of(kinds=[1])])] == [event.id]


async def test_status_and_clean_shutdown(sdk_relay_url):
    pool = RelayPool([sdk_relay_url])
    assert pool.status() == {sdk_relay_url: "disconnected"}
    async with pool:
        assert await pool.wait_connected() == 1
        assert pool.status() == {sdk_relay_url: "connected"}
        sub = pool.subscribe([Filter.of(kinds=[1])])
        await sub.open()
    assert pool.status() == {sdk_relay_url: "disconnected"}
    assert sub.closed
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
                and (t.get_name().startswith("relay:") or "relay_pool" in repr(t.get_coro()))]
    assert leftover == []
    with pytest.raises(StopAsyncIteration):
        await sub.next(timeout=1)


async def test_pool_used_without_context_manager(sdk_relay_url):
    keys = Keys.generate()
    pool = RelayPool([sdk_relay_url])
    try:
        ev = Event.build(keys, 1, "no context manager")
        assert (await pool.publish(ev)).accepted_by == [sdk_relay_url]
        fresh = RelayPool([sdk_relay_url])
        try:
            # first call on a never-started pool: it connects before sending the REQ
            assert [e.id for e in await fresh.query([Filter.of(ids=[ev.id])])] == [ev.id]
        finally:
            await fresh.close()
    finally:
        await pool.close()
        await pool.close()  # idempotent
    with pytest.raises(RelayError, match="closed"):
        await pool.subscribe([Filter.of(kinds=[1])]).open()
