"""RelayPool against the embedded nexus relay: NIP-42 with auth on, NIP-11, and a real
restart on the same port with its SQLite store (nothing acknowledged is lost or repeated)."""

from __future__ import annotations

import pytest

from nexus_relay import RelayConfig, running_relay
from pylon.nostr import Event, Filter, Keys
from pylon.relay.pool import PublishError, RelayPool, SubscriptionClosed, fetch_nip11
from tests.pool.relay_doubles import free_port, wait_for

pytestmark = pytest.mark.embedded_relay


async def test_pool_round_trip_on_relay_url_fixture(relay_url):
    keys = Keys.generate()
    async with RelayPool([relay_url]) as pool:
        async with pool.subscribe([Filter.of(authors=[keys.public_key])]) as sub:
            await sub.wait_eose()
            ev = Event.build(keys, 1, "nexus ☕")
            assert (await pool.publish(ev)).accepted_by == [relay_url]
            assert (await sub.next(timeout=5)).id == ev.id
        assert (await pool.publish(ev)).results[relay_url].prefix == "duplicate"


async def test_nip42_against_nexus_with_auth_on(tmp_path):
    async with running_relay(tmp_path / "r.sqlite", RelayConfig(auth_required=True)) as relay:
        keys = Keys.generate()
        ev = Event.build(keys, 1, "authenticated note")
        async with RelayPool([relay.url], keys=keys) as pool:
            assert (await pool.publish(ev, timeout=5)).accepted_by == [relay.url]
            assert [e.id for e in await pool.query([Filter.of(authors=[keys.public_key])])] == [ev.id]
        async with RelayPool([relay.url]) as anonymous:
            with pytest.raises(PublishError) as info:
                await anonymous.publish(Event.build(keys, 1, "anonymous"), timeout=5)
            assert info.value.result.results[relay.url].prefix == "auth-required"
            async with anonymous.subscribe([Filter.of(kinds=[1])]) as sub:
                with pytest.raises(SubscriptionClosed, match="auth-required"):
                    await sub.next(timeout=5)


async def test_fetch_nip11_from_nexus(relay_url):
    doc = await fetch_nip11(relay_url)
    assert 11 in doc["supported_nips"] and "limitation" in doc


async def test_restart_same_port_with_persistent_store(tmp_path):
    port, db = free_port(), tmp_path / "persist.sqlite"
    keys = Keys.generate()
    async with RelayPool([f"ws://127.0.0.1:{port}"], max_backoff=0.2) as pool:
        url = pool.urls[0]
        async with pool.subscribe([Filter.of(authors=[keys.public_key])]) as sub:
            async with running_relay(db, port=port):
                await pool.wait_connected()
                await sub.wait_eose()
                before = Event.build(keys, 1, "stored before the restart")
                await pool.publish(before)
                assert (await sub.next(timeout=5)).id == before.id
            await wait_for(lambda: pool.status()[url] != "connected", what="disconnect")
            async with running_relay(db, port=port) as relay:
                async with RelayPool([relay.url]) as other:
                    during = Event.build(keys, 1, "published while our pool was away", created_at=before.created_at)
                    await other.publish(during)
                assert (await sub.next(timeout=10)).id == during.id
                await pool.wait_connected()
                await sub.wait_eose()
                assert sub.pending_events() == 0  # `before` came back (since inclusive) and was dropped
                after = Event.build(keys, 1, "live after restart")
                await pool.publish(after)
                assert (await sub.next(timeout=5)).id == after.id
