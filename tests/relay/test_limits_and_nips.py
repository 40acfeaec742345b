"""Limits (strfry defaults, one RelayConfig), rate limits, PoW, NIP-42 AUTH, NIP-11 and the
NIP-40 purge, each answered with the right OK / CLOSED prefix or NOTICE. These need the
embedded relay because they set its configuration."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from nexus_relay import RelayConfig, running_relay
from nexus_relay.nip11 import info_document
from pylon.nostr import Event, Keys, compute_event_id

from tests.relay.helpers import RawClient, note

pytestmark = pytest.mark.embedded_relay


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll a condition (not a sleep-as-synchronisation: returns as soon as it holds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ size and shape limits
async def test_message_and_event_size_limits():
    cfg = RelayConfig(max_message_bytes=4096, max_event_bytes=2048)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        big_event = note(keys, "x" * 3000)  # message < 4096 but event > 2048
        ok = await c.publish(big_event)
        assert ok[:3] == ["OK", big_event.id, False] and ok[3].startswith("invalid:") and "large" in ok[3]
        huge = note(keys, "y" * 5000)  # whole message over 4096: still answered with its id
        ok = await c.publish(huge)
        assert ok[:3] == ["OK", huge.id, False] and ok[3].startswith("invalid:")
        await c.send('["NOTICE-ME", "' + "z" * 5000 + '"]')
        assert (await c.recv())[0] == "NOTICE"
        multibyte = note(keys, "é" * 1100)  # 1100 chars, 2200 bytes of content
        ok = await c.publish(multibyte)
        assert ok[2] is False and "large" in ok[3]
        # the connection still works
        small = note(keys, "small")
        assert (await c.publish(small))[2] is True


async def test_too_many_tags():
    cfg = RelayConfig(max_event_tags=5)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        ok = await c.publish(note(keys, tags=[["t", str(i)] for i in range(6)]))
        assert ok[2] is False and ok[3].startswith("invalid:") and "tags" in ok[3]
        assert (await c.publish(note(keys, tags=[["t", str(i)] for i in range(5)])))[2] is True


async def test_an_event_with_a_lone_surrogate_gets_ok_false_not_an_internal_error():
    keys = Keys.generate()
    event = note(keys, "fine")
    async with running_relay() as relay, RawClient(relay.url) as c:
        for field, value in (("content", "\ud800 lone"), ("tags", [["t", "\udfff"]])):
            await c.send(json.dumps(["EVENT", {**event.to_dict(), field: value}]))  # ASCII-escaped
            ok = await c.recv()
            assert ok[:3] == ["OK", event.id, False] and "surrogate" in ok[3] and ok[3].startswith("invalid:")
        assert relay.stats.rejections.get("error", 0) == 0
        assert (await c.publish(event))[2] is True


async def test_default_tag_limit_is_2000():
    keys = Keys.generate()
    async with running_relay() as relay, RawClient(relay.url) as c:
        ok = await c.publish(note(keys, tags=[["t", str(i)] for i in range(2001)]))
        assert ok[2] is False and "tags" in ok[3]


async def test_subscription_id_length_and_count_and_filters():
    cfg = RelayConfig(max_subscriptions=3, max_filters=2)
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        long_id = "s" * 65
        _, end = await c.req(long_id, {"kinds": [1]})
        assert end[0] == "CLOSED" and end[2].startswith("invalid:")
        _, end = await c.req("s" * 64, {"kinds": [1]})
        assert end[0] == "EOSE"
        for sid in ("a", "b"):
            _, end = await c.req(sid, {"kinds": [1]})
            assert end[0] == "EOSE"
        _, end = await c.req("d", {"kinds": [1]})
        assert end[0] == "CLOSED" and end[1] == "d" and end[2].startswith("blocked:")
        _, end = await c.req("a", {"kinds": [2]})  # replacing an existing id is not a new subscription
        assert end == ["EOSE", "a"]
        await c.send(["CLOSE", "b"])
        _, end = await c.req("d", {"kinds": [1]}, {"kinds": [2]})
        assert end == ["EOSE", "d"]
        await c.send(["CLOSE", "d"])
        _, end = await c.req("e", {"kinds": [1]}, {"kinds": [2]}, {"kinds": [3]})
        assert end[0] == "CLOSED" and end[2].startswith("invalid:") and "filters" in end[2]
        _, end = await c.req("f")
        assert end[0] == "CLOSED" and end[2].startswith("invalid:")
        await c.send(["REQ", "g", {"kinds": ["one"]}])
        closed = await c.recv_type("CLOSED")
        assert closed[1] == "g" and closed[2].startswith("invalid:")


async def test_limit_is_clamped():
    cfg = RelayConfig(max_limit=3)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        for i in range(5):
            await c.publish(note(keys, f"c{i}", created_at=int(time.time()) - i))
        got, _ = await c.req("big", {"authors": [keys.public_key], "limit": 1000})
        assert len(got) == 3
        got, _ = await c.req("none", {"authors": [keys.public_key]})
        assert len(got) == 3
        count = await c.count("n", {"authors": [keys.public_key]})
        assert count[2] == {"count": 5}  # COUNT is not clamped


async def test_row_and_byte_budgets_cut_a_req_over_all_its_filters():
    keys = Keys.generate()
    now = int(time.time())
    events = [note(keys, f"b{i}" + "x" * 200, created_at=now - i) for i in range(6)]
    async with running_relay(config=RelayConfig(query_max_rows=4)) as relay, RawClient(relay.url) as c:
        for ev in events:
            assert (await c.publish(ev))[2] is True
        halves = ({"ids": [e.id for e in events[:3]]}, {"ids": [e.id for e in events[3:]]})
        got, end = await c.req("rows", *halves)
        assert end == ["EOSE", "rows"] and [e["id"] for e in got] == [e.id for e in events[:4]]
    size = len(events[0].to_json())
    async with running_relay(config=RelayConfig(query_max_bytes=2 * size)) as relay, RawClient(relay.url) as c:
        for ev in events:
            assert (await c.publish(ev))[2] is True
        got, end = await c.req("bytes", {"authors": [keys.public_key]})
        assert end == ["EOSE", "bytes"] and [e["id"] for e in got] == [e.id for e in events[:2]]


async def test_old_ephemeral_rejected():
    keys = Keys.generate()
    async with running_relay() as relay, RawClient(relay.url) as c:
        stale = note(keys, kind=20000, created_at=int(time.time()) - 120)
        ok = await c.publish(stale)
        assert ok[:3] == ["OK", stale.id, False] and ok[3].startswith("invalid:")


async def test_event_rate_limit_per_connection():
    cfg = RelayConfig(events_per_second=0.001, events_burst=3)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay:
        async with RawClient(relay.url) as c:
            results = [await c.publish(note(keys, f"r{i}")) for i in range(5)]
            assert [r[2] for r in results] == [True, True, True, False, False]
            assert results[3][3].startswith("rate-limited:") and results[3][1] != ""
        async with RawClient(relay.url) as other:  # another connection has its own bucket
            assert (await other.publish(note(keys, "fresh bucket")))[2] is True


async def test_req_rate_limit():
    cfg = RelayConfig(reqs_per_second=0.001, reqs_burst=2)
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        assert (await c.req("a", {"kinds": [1]}))[1][0] == "EOSE"
        assert (await c.count("b", {"kinds": [1]}))[0] == "COUNT"
        _, end = await c.req("c", {"kinds": [1]})
        assert end[0] == "CLOSED" and end[2].startswith("rate-limited:")


async def test_pending_query_limit_per_connection():
    """Past `max_pending_queries` REQ/COUNT still waiting for the querier, the next is refused
    (CLOSED rate-limited:) and the waiting ones are answered. The querier thread is held at its
    lock (an RLock: the loop thread may still queue work) so the first query stays pending."""
    cfg = RelayConfig(max_pending_queries=1)
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        with relay.querier._cv:
            await c.send(["REQ", "first", {"kinds": [1]}])
            await _wait_for(lambda: any(conn.pending_queries == 1 for conn in relay.connections))
            _, end = await c.req("second", {"kinds": [1]})
            assert end[0] == "CLOSED" and end[1] == "second" and end[2].startswith("rate-limited:")
        assert await c.recv_type("EOSE") == ["EOSE", "first"]
        assert (await c.req("third", {"kinds": [1]}))[1] == ["EOSE", "third"]


def _mine(keys: Keys, bits: int) -> Event:
    """NIP-13 proof of work: bump a nonce tag until the id has `bits` leading zero bits."""
    created = int(time.time())
    nonce = 0
    while True:
        tags = [["nonce", str(nonce), str(bits)]]
        eid = compute_event_id(keys.public_key, created, 1, tags, "pow")
        if int(eid, 16) >> (256 - bits) == 0:
            return Event(eid, keys.public_key, created, 1, tags, "pow", keys.sign(bytes.fromhex(eid)))
        nonce += 1


async def test_pow_minimum():
    cfg = RelayConfig(min_pow_difficulty=8)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        weak = note(keys, "no work")
        while weak.id.startswith("00"):
            weak = note(keys, "no work, really")
        ok = await c.publish(weak)
        assert ok[:3] == ["OK", weak.id, False] and ok[3].startswith("pow:")
        assert (await c.publish(_mine(keys, 8)))[2] is True


async def test_auth_event_kind_not_accepted_as_event():
    keys = Keys.generate()
    async with running_relay() as relay, RawClient(relay.url) as c:
        ev = note(keys, kind=22242, tags=[["relay", relay.url], ["challenge", "x"]])
        ok = await c.publish(ev)
        assert ok[2] is False and ok[3].startswith("invalid:")


# ------------------------------------------------------------------ NIP-42 AUTH
def _auth_event(keys: Keys, relay_url: str, challenge: str, created_at: int | None = None) -> Event:
    return Event.build(keys, 22242, "", [["relay", relay_url], ["challenge", challenge]], created_at=created_at)


async def test_auth_off_by_default():
    keys = Keys.generate()
    async with running_relay() as relay, RawClient(relay.url) as c:
        _, end = await c.req("s", {"kinds": [1]})  # the first frame is EOSE: no AUTH challenge sent
        assert end == ["EOSE", "s"]
        assert (await c.publish(note(keys)))[2] is True
        ok = await c.publish(_auth_event(keys, relay.url, "whatever"))
        assert ok[2] is False  # no challenge was issued, so no AUTH can succeed


async def test_auth_required_flow():
    cfg = RelayConfig(auth_required=True)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        challenge_frame = await c.recv()
        assert challenge_frame[0] == "AUTH" and isinstance(challenge_frame[1], str)
        challenge = challenge_frame[1]
        _, end = await c.req("s", {"kinds": [1]})
        assert end[0] == "CLOSED" and end[2].startswith("auth-required:")
        ev = note(keys, "before auth")
        ok = await c.publish(ev)
        assert ok[:3] == ["OK", ev.id, False] and ok[3].startswith("auth-required:")
        count = await c.count("c", {"kinds": [1]})
        assert count[0] == "CLOSED" and count[2].startswith("auth-required:")

        async def auth(event: Event) -> list:
            await c.send(["AUTH", event.to_dict()])
            return await c.recv_type("OK")

        bad = [
            _auth_event(keys, relay.url, "wrong-challenge"),
            _auth_event(keys, "ws://example.com", challenge),
            _auth_event(keys, relay.url, challenge, created_at=int(time.time()) - 3600),
            Event.build(keys, 1, "", [["relay", relay.url], ["challenge", challenge]]),
        ]
        for event in bad:
            ok = await auth(event)
            assert ok[:3] == ["OK", event.id, False] and ok[3].startswith("invalid:"), ok
        forged = _auth_event(keys, relay.url, challenge).to_dict()
        forged["sig"] = Keys.generate().sign(bytes.fromhex(forged["id"]))
        assert (await auth(Event.from_dict(forged)))[2] is False
        # trailing slash and localhost alias name the same relay
        good = _auth_event(keys, relay.url.replace("127.0.0.1", "localhost") + "/", challenge)
        assert await auth(good) == ["OK", good.id, True, ""]
        assert (await c.publish(ev))[2] is True
        got, end = await c.req("s", {"ids": [ev.id]})
        assert end[0] == "EOSE" and [e["id"] for e in got] == [ev.id]


async def test_auth_challenge_is_per_connection():
    cfg = RelayConfig(auth_required=True)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as a, RawClient(relay.url) as b:
        ca, cb = (await a.recv())[1], (await b.recv())[1]
        assert ca != cb
        await b.send(["AUTH", _auth_event(keys, relay.url, ca).to_dict()])
        assert (await b.recv_type("OK"))[2] is False


# ------------------------------------------------------------------ NIP-11
async def test_nip11_document_matches_enforced_config():
    cfg = RelayConfig(max_subscriptions=7, max_limit=42, auth_required=True, name="test-nexus")
    async with running_relay(config=cfg) as relay:
        http_url = relay.url.replace("ws://", "http://")
        async with httpx.AsyncClient() as http:
            resp = await http.get(http_url, headers={"Accept": "application/nostr+json"})
            plain = await http.get(http_url)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/nostr+json"
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-methods" in resp.headers and "access-control-allow-headers" in resp.headers
    doc = resp.json()
    assert doc == json.loads(json.dumps(info_document(cfg)))
    assert doc["name"] == "test-nexus"
    assert {1, 9, 11, 40, 42, 45} <= set(doc["supported_nips"])
    lim = doc["limitation"]
    assert lim["max_subscriptions"] == 7 and lim["max_limit"] == 42 and lim["auth_required"] is True
    assert lim["max_message_length"] == 131072 and lim["max_subid_length"] == 64
    assert lim["max_event_tags"] == 2000 and lim["max_filters"] == 200
    assert plain.status_code == 200 and "Nostr relay" in plain.text


# ------------------------------------------------------------------ NIP-40 purge
async def test_expiring_event_stops_being_served_and_is_purged():
    cfg = RelayConfig(purge_interval_seconds=0.2)
    keys = Keys.generate()
    async with running_relay(config=cfg) as relay, RawClient(relay.url) as c:
        soon = note(keys, "short-lived", tags=[["expiration", str(int(time.time()) + 2)]])
        assert (await c.publish(soon))[2] is True
        got, _ = await c.req("a", {"ids": [soon.id]})
        assert len(got) == 1
        await _wait_for(lambda: relay.stats.events_expired >= 1)
        got, _ = await c.req("b", {"ids": [soon.id]})
        assert got == []
        assert relay.store.stored_count() == 0


# ------------------------------------------------------------------ stats
async def test_stats_counters():
    keys = Keys.generate()
    async with running_relay() as relay:
        async with RawClient(relay.url) as c:
            ev = note(keys)
            await c.publish(ev)
            await c.publish(ev)
            bad = note(keys).to_dict()
            bad["content"] = "changed"
            await c.publish(bad)
            await c.req("s", {"kinds": [1]})
            await c.send("nonsense")
            await c.recv_type("NOTICE")
            snap = relay.stats.snapshot()
            assert snap["connections"] == 1 and snap["subscriptions"] == 1
        assert snap["events_stored"] == 1 and snap["duplicates"] == 1
        assert snap["messages"]["EVENT"] == 3 and snap["messages"]["REQ"] == 1 and snap["messages"]["INVALID"] == 1
        assert snap["rejections"]["invalid"] == 2
        await _wait_for(lambda: relay.stats.connections == 0)
        assert relay.stats.subscriptions == 0 and relay.stats["connections_total"] == 1
