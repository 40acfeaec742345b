"""RelayPool under faults: outages, a restarted relay, a relay that never answers OK, a dead
relay among three, a relay that is down when we publish."""

from __future__ import annotations

import time

import pytest

from pylon.errors import RelayError
from pylon.nostr import Event, Filter, Keys
from pylon.relay.pool import PublishError, RelayPool
from tests.pool.relay_doubles import ScriptedRelayDouble, TcpOutageDouble, free_port, wait_for


async def test_outage_events_published_meanwhile_arrive_exactly_once(sdk_relays):
    """The pool's link to a real relay is cut; others keep publishing; after the link comes
    back (same port) the subscription gets exactly the missed events, once each, although
    its original filter had limit=1 (so a naive resend of the original REQ would miss some)."""
    relay, relay_url = await sdk_relays.start()
    link = TcpOutageDouble(int(relay_url.rsplit(":", 1)[1]))
    await link.start()
    keys = Keys.generate()
    t0 = int(time.time()) - 60
    first = Event.build(keys, 1, "before the outage", created_at=t0)
    missed = [Event.build(keys, 1, "same second as the last seen", created_at=t0),
              Event.build(keys, 1, "during the outage 1", created_at=t0 + 1),
              Event.build(keys, 1, "during the outage 2", created_at=t0 + 2)]
    try:
        async with RelayPool([relay_url]) as publisher, RelayPool([link.url], max_backoff=0.2) as pool:
            async with pool.subscribe([Filter.of(kinds=[1], authors=[keys.public_key], limit=1)]) as sub:
                await sub.wait_eose()
                await publisher.publish(first)
                assert (await sub.next(timeout=5)).id == first.id

                await link.stop()
                await wait_for(lambda: pool.status()[link.url] != "connected", what="pool to notice the outage")
                down = await pool.publish(Event.build(keys, 1, "while down"), timeout=30, min_accepted=0)
                assert down.results[link.url].prefix == "disconnected"  # fails fast, no 30 s wait
                for ev in missed:
                    assert (await publisher.publish(ev)).accepted_by == [relay_url]

                await link.start()
                got = [await sub.next(timeout=10) for _ in range(3)]
                await sub.wait_eose(timeout=10)
                assert sorted(e.id for e in got) == sorted(e.id for e in missed)
                assert sub.pending_events() == 0
                assert pool.stats["duplicates"] >= 1  # `first` came back (since is inclusive), dropped
                live = Event.build(keys, 1, "after the outage")
                await publisher.publish(live)
                assert (await sub.next(timeout=5)).id == live.id
                assert sub.pending_events() == 0
    finally:
        await link.stop()


async def test_relay_restarted_on_same_port_mid_subscription(sdk_relays):
    port = free_port()
    relay, url = await sdk_relays.start(port=port)
    keys = Keys.generate()
    async with RelayPool([url], max_backoff=0.2) as pool:
        async with pool.subscribe([Filter.of(kinds=[1], authors=[keys.public_key])]) as sub:
            await sub.wait_eose()
            before = Event.build(keys, 1, "before restart")
            await pool.publish(before)
            assert (await sub.next(timeout=5)).id == before.id

            sdk_relays.stop(relay)
            await wait_for(lambda: pool.status()[url] != "connected", what="disconnect")
            relay, url2 = await sdk_relays.start(port=port)
            assert url2 == url
            # Published by another client as soon as the relay is back, possibly before our
            # pool has reconnected: it must arrive once either way.
            async with RelayPool([url]) as other:
                during = Event.build(keys, 1, "published right after the restart")
                await other.publish(during)
            assert (await sub.next(timeout=10)).id == during.id
            await pool.wait_connected()
            after = Event.build(keys, 1, "after reconnect")
            await pool.publish(after)
            assert (await sub.next(timeout=5)).id == after.id
            assert sub.pending_events() == 0
    assert pool._relays[url].connections == 2


async def test_relay_that_never_answers_ok_times_out_clearly(sdk_relay_url):
    async def swallow(double, ws, msg):
        if msg[0] == "REQ":
            await ws.send('["EOSE","%s"]' % msg[1])  # answers REQ, swallows EVENT

    async with ScriptedRelayDouble(swallow) as silent:
        keys = Keys.generate()
        async with RelayPool([silent.url], ok_timeout=0.3) as pool:
            with pytest.raises(PublishError) as info:
                await pool.publish(Event.build(keys, 1, "into the void"))
            reply = info.value.result.results[silent.url]
            assert (reply.accepted, reply.prefix) == (False, "timeout")
            assert "no OK" in reply.message and silent.url in str(info.value)
            assert silent.frames("EVENT")  # it did receive it
        # next to a real relay the publish succeeds and the result says which one failed
        async with RelayPool([sdk_relay_url, silent.url], ok_timeout=0.3) as pool:
            result = await pool.publish(Event.build(keys, 1, "half heard"))
            assert result.accepted_by == [sdk_relay_url]
            assert result.failed[silent.url].prefix == "timeout"


async def test_one_dead_relay_among_three(sdk_relays):
    _, url_a = await sdk_relays.start()
    _, url_b = await sdk_relays.start()
    dead = f"ws://127.0.0.1:{free_port()}"
    keys = Keys.generate()
    async with RelayPool([url_a, dead, url_b], connect_timeout=2, max_backoff=0.5) as pool:
        assert pool.status()[dead] in ("disconnected", "connecting")
        result = await pool.publish(Event.build(keys, 1, "two of three"))
        assert sorted(result.accepted_by) == sorted([url_a, url_b])
        assert list(result.failed) == [dead]
        assert result.failed[dead].prefix == "disconnected"
        assert "connect failed" in result.failed[dead].message
        with pytest.raises(PublishError) as info:
            await pool.publish(Event.build(keys, 1, "needs all three"), min_accepted=3)
        assert dead in str(info.value) and "2 of 3" in str(info.value)
        # queries still work with the dead relay in the pool
        assert len(await pool.query([Filter.of(authors=[keys.public_key])])) == 2


async def test_wait_connected_raises_when_no_relay_is_reachable():
    dead = f"ws://127.0.0.1:{free_port()}"
    async with RelayPool([dead], connect_timeout=0.5, max_backoff=0.2) as pool:
        with pytest.raises(RelayError, match="no relay connected"):
            await pool.wait_connected(timeout=0.5)
        assert "connect failed" in pool.last_errors()[dead]


def test_backoff_grows_with_jitter_and_is_capped():
    pool = RelayPool(["ws://127.0.0.1:1"], max_backoff=4.0)
    relay = pool._relays["ws://127.0.0.1:1"]
    seen = []
    for failures in range(1, 12):
        relay.failures = failures
        nominal = min(4.0, 0.25 * 2 ** (failures - 1))
        delays = {relay.backoff() for _ in range(20)}
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(delays) > 1  # jitter
        seen.append(nominal)
    assert seen[0] == 0.25 and seen[-1] == 4.0


def test_bad_urls_are_refused():
    for bad in ["http://relay.example", "relay.example", "ws://", ""]:
        with pytest.raises(RelayError):
            RelayPool([bad])
    with pytest.raises(RelayError):
        RelayPool([])
    pool = RelayPool(["wss://Relay.Example/", "wss://relay.example"])
    assert pool.urls == ["wss://relay.example"]
