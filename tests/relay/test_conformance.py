"""NIP-01 conformance of the relay, over real websockets: the checks relay testers run.

These use the `relay_url` fixture, so they also run against another relay when
PYLON_TEST_RELAY is set; nexus-specific wording lives in test_limits / test_nips.
"""

from __future__ import annotations

import json
import time

from pylon.nostr import Event, Keys, compute_event_id

from tests.relay.helpers import RawClient, note


def _signed(keys: Keys, *, kind: int = 1, content: str = "", tags=None, created_at: int | None = None) -> Event:
    return Event.build(keys, kind, content, tags or [], created_at=created_at)


# ------------------------------------------------------------------ OK for every EVENT
async def test_ok_true_carries_event_id(relay_url):
    keys = Keys.generate()
    async with RawClient(relay_url) as c:
        ev = note(keys)
        assert await c.publish(ev) == ["OK", ev.id, True, ""]


async def test_bad_signature_rejected_with_id(relay_url):
    keys, other = Keys.generate(), Keys.generate()
    ev = note(keys, "forged")
    forged = ev.to_dict()
    forged["sig"] = other.sign(bytes.fromhex(ev.id))  # valid signature by the wrong key
    async with RawClient(relay_url) as c:
        ok = await c.publish(forged)
        assert ok[:3] == ["OK", ev.id, False] and ok[3].startswith("invalid:")
        events, _ = await c.req("q", {"ids": [ev.id]})
        assert events == []


async def test_bad_id_rejected_with_id(relay_url):
    keys = Keys.generate()
    ev = note(keys, "original").to_dict()
    ev["content"] = "tampered"  # id and sig no longer match the content
    async with RawClient(relay_url) as c:
        ok = await c.publish(ev)
        assert ok[:3] == ["OK", ev["id"], False] and ok[3].startswith("invalid:")


async def test_malformed_event_with_readable_id_gets_ok_false(relay_url):
    keys = Keys.generate()
    ev = note(keys).to_dict()
    del ev["sig"]
    async with RawClient(relay_url) as c:
        ok = await c.publish(ev)
        assert ok[:3] == ["OK", ev["id"], False] and ok[3].startswith("invalid:")
        wrong_kind = note(keys).to_dict()
        wrong_kind["kind"] = "1"
        ok = await c.publish(wrong_kind)
        assert ok[:3] == ["OK", wrong_kind["id"], False] and ok[3].startswith("invalid:")


async def test_duplicate_is_ok_true_with_duplicate_prefix(relay_url):
    keys = Keys.generate()
    ev = note(keys, "twice")
    async with RawClient(relay_url) as c:
        assert (await c.publish(ev))[2] is True
        again = await c.publish(ev)
        assert again[:3] == ["OK", ev.id, True] and again[3].startswith("duplicate:")


async def test_pipelined_events_each_get_their_own_ok(relay_url):
    keys = Keys.generate()
    events = [note(keys, f"n{i}") for i in range(50)]
    async with RawClient(relay_url) as c:
        for ev in events:
            await c.send(["EVENT", ev.to_dict()])
        oks = [await c.recv_type("OK") for _ in events]
        assert sorted(o[1] for o in oks) == sorted(e.id for e in events)
        assert all(o[2] is True for o in oks)


# ------------------------------------------------------------------ JSON escapes
ESCAPE_CONTENT = (
    'quote " backslash \\ slash / newline \n tab \t cr \r bell \x07 nul \x00 ff \x0c bs \x08 '
    "unicode é ü ß 中文 🚀 \u2028 \u2029 \ufeff combining é escape-ish \\u0041 end"
)


async def test_json_escapes_round_trip_with_correct_ids(relay_url):
    keys = Keys.generate()
    tags = [["t", 'tag "quoted" \\ \n 🚀'], ["x", "\x01\x1f", "é"], ["e", "a" * 64, "", "reply"]]
    ev = _signed(keys, content=ESCAPE_CONTENT, tags=tags)
    async with RawClient(relay_url) as c:
        for ensure_ascii in (False, True):  # \uXXXX-escaped or raw UTF-8 on the wire: same id
            fresh = _signed(keys, content=ESCAPE_CONTENT + str(ensure_ascii), tags=tags)
            await c.send(json.dumps(["EVENT", fresh.to_dict()], ensure_ascii=ensure_ascii))
            ok = await c.recv_type("OK")
            assert ok[:3] == ["OK", fresh.id, True], ok
        assert (await c.publish(ev))[2] is True
        events, _ = await c.req("esc", {"ids": [ev.id]})
    assert len(events) == 1
    back = Event.from_dict(events[0])
    assert back.content == ESCAPE_CONTENT and back.tags == tags
    assert compute_event_id(back.pubkey, back.created_at, back.kind, back.tags, back.content) == ev.id
    back.verify()


async def test_empty_tags_and_empty_tag_arrays(relay_url):
    keys = Keys.generate()
    plain = _signed(keys, content="no tags", tags=[])
    odd = _signed(keys, content="empty tag arrays", tags=[[], ["t"]])
    async with RawClient(relay_url) as c:
        assert (await c.publish(plain))[2] is True
        assert (await c.publish(odd))[2] is True
        events, _ = await c.req("e", {"ids": [plain.id, odd.id]})
    assert {e["id"]: e["tags"] for e in events} == {plain.id: [], odd.id: [[], ["t"]]}


# ------------------------------------------------------------------ created_at
async def test_created_at_zero_is_accepted_and_served(relay_url):
    keys = Keys.generate()
    ev = _signed(keys, content="epoch", created_at=0)
    async with RawClient(relay_url) as c:
        assert (await c.publish(ev))[2] is True
        events, _ = await c.req("z", {"authors": [keys.public_key], "until": 0})
    assert [e["id"] for e in events] == [ev.id]


async def test_created_at_future_boundary(relay_url):
    keys = Keys.generate()
    now = int(time.time())
    at_limit = _signed(keys, content="at +900", created_at=now + 900)
    beyond = _signed(keys, content="far future", created_at=now + 3600)
    just_beyond = _signed(keys, content="+905", created_at=now + 905)
    async with RawClient(relay_url) as c:
        assert (await c.publish(at_limit))[2] is True  # the relay's clock is >= ours
        for ev in (beyond, just_beyond):
            ok = await c.publish(ev)
            assert ok[:3] == ["OK", ev.id, False] and ok[3].startswith("invalid:")


# ------------------------------------------------------------------ queries
async def test_ordering_newest_first_ties_by_lowest_id(relay_url):
    keys = Keys.generate()
    base = int(time.time()) - 1000
    stamps = [base + 5, base + 1, base + 9, base + 3, base + 9, base + 9, base + 7]
    events = [_signed(keys, content=f"o{i}", created_at=t) for i, t in enumerate(stamps)]
    async with RawClient(relay_url) as c:
        for ev in events:
            assert (await c.publish(ev))[2] is True
        got, _ = await c.req("ord", {"authors": [keys.public_key]})
    expected = sorted(events, key=lambda e: (-e.created_at, e.id))
    assert [e["id"] for e in got] == [e.id for e in expected]


async def test_limit_and_limit_zero(relay_url):
    keys = Keys.generate()
    base = int(time.time()) - 100
    events = [_signed(keys, content=f"l{i}", created_at=base + i) for i in range(6)]
    async with RawClient(relay_url) as c:
        for ev in events:
            await c.publish(ev)
        got, end = await c.req("lim", {"authors": [keys.public_key], "limit": 2})
        assert [e["id"] for e in got] == [events[5].id, events[4].id] and end[0] == "EOSE"
        got, end = await c.req("zero", {"authors": [keys.public_key], "limit": 0})
        assert got == [] and end == ["EOSE", "zero"]
        # limit 0 still delivers live events
        live = _signed(keys, content="live after limit 0")
        async with RawClient(relay_url) as pub:
            await pub.publish(live)
        msg = await c.recv_type("EVENT")
        assert msg[1] in ("lim", "zero") and msg[2]["id"] == live.id


async def test_since_until_inclusive(relay_url):
    keys = Keys.generate()
    base = int(time.time()) - 500
    events = {t: _signed(keys, content=f"t{t}", created_at=base + t) for t in range(5)}
    async with RawClient(relay_url) as c:
        for ev in events.values():
            await c.publish(ev)
        got, _ = await c.req("r", {"authors": [keys.public_key], "since": base + 1, "until": base + 3})
    assert [e["created_at"] - base for e in got] == [3, 2, 1]


async def test_every_filter_field(relay_url):
    alice, bob = Keys.generate(), Keys.generate()
    ref = "ab" * 32
    p_target = Keys.generate().public_key
    e1 = _signed(alice, kind=1, content="a1", tags=[["e", ref], ["t", "nostr"]])
    e2 = _signed(alice, kind=7, content="a7", tags=[["p", p_target], ["t", "other"]])
    e3 = _signed(bob, kind=1, content="b1", tags=[["t", "nostr"], ["t", "second"]])
    e4 = _signed(bob, kind=1, content="b1 second value", tags=[["x", "nostr", "more"], ["e", "cd" * 32, ref]])
    authors = [alice.public_key, bob.public_key]
    async with RawClient(relay_url) as c:
        for ev in (e1, e2, e3, e4):
            assert (await c.publish(ev))[2] is True

        async def ids(*filters):
            got, end = await c.req("f", *filters)
            assert end[0] == "EOSE"
            return {e["id"] for e in got}

        assert await ids({"ids": [e1.id, e3.id]}) == {e1.id, e3.id}
        assert await ids({"authors": [alice.public_key]}) == {e1.id, e2.id}
        assert await ids({"authors": authors, "kinds": [7]}) == {e2.id}
        assert await ids({"authors": authors, "#e": [ref]}) == {e1.id}  # only a tag's first value
        assert await ids({"authors": authors, "#p": [p_target]}) == {e2.id}
        assert await ids({"authors": authors, "#t": ["nostr"]}) == {e1.id, e3.id}
        assert await ids({"authors": authors, "#t": ["second"]}) == {e3.id}
        assert await ids({"authors": authors, "#t": ["nostr"], "kinds": [1], "#e": [ref]}) == {e1.id}
        assert await ids({"authors": authors, "#x": ["nostr"]}) == {e4.id}
        assert await ids({"ids": [e1.id]}, {"authors": [bob.public_key], "kinds": [1]}) == {e1.id, e3.id, e4.id}
        assert await ids({"authors": authors, "kinds": [1], "since": 0, "until": int(time.time()) + 10}) == {
            e1.id, e3.id, e4.id}
        assert await ids({"ids": []}) == set()


# ------------------------------------------------------------------ ephemeral
async def test_ephemeral_delivered_live_not_stored(relay_url):
    keys = Keys.generate()
    ev = _signed(keys, kind=20001, content="now or never")
    async with RawClient(relay_url) as sub, RawClient(relay_url) as pub:
        _, end = await sub.req("eph", {"authors": [keys.public_key]})
        assert end[0] == "EOSE"
        assert await pub.publish(ev) == ["OK", ev.id, True, ""]
        live = await sub.recv_type("EVENT")
        assert live[2]["id"] == ev.id
        stored, _ = await pub.req("later", {"authors": [keys.public_key]})
        assert stored == []


# ------------------------------------------------------------------ replaceable / addressable
async def test_replaceable_newer_wins_older_rejected(relay_url):
    keys = Keys.generate()
    now = int(time.time())
    old = _signed(keys, kind=0, content='{"name":"old"}', created_at=now - 10)
    new = _signed(keys, kind=0, content='{"name":"new"}', created_at=now - 5)
    async with RawClient(relay_url) as c:
        assert (await c.publish(old))[2] is True
        assert (await c.publish(new))[2] is True
        got, _ = await c.req("meta", {"authors": [keys.public_key], "kinds": [0]})
        assert [e["id"] for e in got] == [new.id]
        stale = await c.publish(old)  # older than what is stored: refused
        assert stale[:3] == ["OK", old.id, False] and stale[3]
        older = _signed(keys, kind=0, content='{"name":"older"}', created_at=now - 20)
        assert (await c.publish(older))[2] is False
        got, _ = await c.req("meta2", {"authors": [keys.public_key], "kinds": [0]})
        assert [e["id"] for e in got] == [new.id]


def _tie_pair(keys: Keys, kind: int, tags: list, created_at: int) -> tuple[Event, Event]:
    a = _signed(keys, kind=kind, content="tie a", tags=tags, created_at=created_at)
    b = _signed(keys, kind=kind, content="tie b", tags=tags, created_at=created_at)
    return (a, b) if a.id < b.id else (b, a)


async def test_replaceable_tie_goes_to_lower_id(relay_url):
    keys = Keys.generate()
    low, high = _tie_pair(keys, 10002, [], int(time.time()) - 30)
    async with RawClient(relay_url) as c:
        assert (await c.publish(high))[2] is True
        assert (await c.publish(low))[2] is True  # same created_at, lower id: replaces
        assert (await c.publish(high))[2] is False  # higher id loses the tie
        got, _ = await c.req("tie", {"authors": [keys.public_key], "kinds": [10002]})
    assert [e["id"] for e in got] == [low.id]


async def test_addressable_replacement_per_d_tag(relay_url):
    keys = Keys.generate()
    now = int(time.time())
    a1 = _signed(keys, kind=30023, content="a v1", tags=[["d", "a"]], created_at=now - 10)
    a2 = _signed(keys, kind=30023, content="a v2", tags=[["d", "a"]], created_at=now - 5)
    b1 = _signed(keys, kind=30023, content="b v1", tags=[["d", "b"]], created_at=now - 10)
    nod = _signed(keys, kind=30023, content="no d tag", created_at=now - 10)
    low, high = _tie_pair(keys, 30023, [["d", "c"]], now - 7)
    async with RawClient(relay_url) as c:
        for ev in (a1, a2, b1, nod, high, low):
            assert (await c.publish(ev))[2] is True, ev.content
        assert (await c.publish(a1))[2] is False
        assert (await c.publish(high))[2] is False
        got, _ = await c.req("addr", {"authors": [keys.public_key], "kinds": [30023]})
        assert {e["id"] for e in got} == {a2.id, b1.id, nod.id, low.id}
        got, _ = await c.req("addr-d", {"authors": [keys.public_key], "kinds": [30023], "#d": ["a"]})
        assert [e["id"] for e in got] == [a2.id]


# ------------------------------------------------------------------ deletion (NIP-09)
async def test_deletion_by_id_only_own_events(relay_url):
    alice, mallory = Keys.generate(), Keys.generate()
    mine = _signed(alice, content="delete me")
    keep = _signed(alice, content="keep me")
    async with RawClient(relay_url) as c:
        for ev in (mine, keep):
            await c.publish(ev)
        forged = _signed(mallory, kind=5, tags=[["e", keep.id]])
        assert (await c.publish(forged))[2] is True  # stored, but deletes nothing of alice's
        deletion = _signed(alice, kind=5, content="oops", tags=[["e", mine.id], ["k", "1"]])
        assert (await c.publish(deletion))[2] is True
        got, _ = await c.req("d", {"ids": [mine.id, keep.id]})
        assert [e["id"] for e in got] == [keep.id]
        again = await c.publish(mine)  # a deleted event cannot be re-published
        assert again[:3] == ["OK", mine.id, False]
        got, _ = await c.req("d2", {"kinds": [5], "authors": [alice.public_key]})
        assert [e["id"] for e in got] == [deletion.id]  # the deletion request itself is served


async def test_deletion_by_address_up_to_its_created_at(relay_url):
    keys, other = Keys.generate(), Keys.generate()
    now = int(time.time())
    v1 = _signed(keys, kind=30000, content="v1", tags=[["d", "list"]], created_at=now - 20)
    others = _signed(other, kind=30000, content="not yours", tags=[["d", "list"]], created_at=now - 20)
    coord = f"30000:{keys.public_key}:list"
    async with RawClient(relay_url) as c:
        await c.publish(v1)
        await c.publish(others)
        bogus = _signed(keys, kind=5, tags=[["a", f"30000:{other.public_key}:list"]], created_at=now - 10)
        assert (await c.publish(bogus))[2] is True
        deletion = _signed(keys, kind=5, tags=[["a", coord]], created_at=now - 10)
        assert (await c.publish(deletion))[2] is True
        got, _ = await c.req("a", {"kinds": [30000], "#d": ["list"], "authors": [keys.public_key, other.public_key]})
        assert [e["id"] for e in got] == [others.id]
        before = _signed(keys, kind=30000, content="older than deletion", tags=[["d", "list"]], created_at=now - 15)
        assert (await c.publish(before))[2] is False
        after = _signed(keys, kind=30000, content="v2", tags=[["d", "list"]], created_at=now - 5)
        assert (await c.publish(after))[2] is True
        got, _ = await c.req("a2", {"kinds": [30000], "authors": [keys.public_key]})
        assert [e["id"] for e in got] == [after.id]


# ------------------------------------------------------------------ expiration (NIP-40)
async def test_expired_event_rejected_and_future_one_served(relay_url):
    keys = Keys.generate()
    now = int(time.time())
    expired = _signed(keys, content="gone", tags=[["expiration", str(now - 1)]])
    later = _signed(keys, content="still here", tags=[["expiration", str(now + 3600)]])
    async with RawClient(relay_url) as c:
        ok = await c.publish(expired)
        assert ok[:3] == ["OK", expired.id, False] and ok[3].startswith("invalid:")
        assert (await c.publish(later))[2] is True
        got, _ = await c.req("x", {"authors": [keys.public_key]})
    assert [e["id"] for e in got] == [later.id]


# ------------------------------------------------------------------ COUNT (NIP-45)
async def test_count(relay_url):
    keys = Keys.generate()
    events = [_signed(keys, kind=k, content=str(i)) for i, k in enumerate([1, 1, 1, 7])]
    async with RawClient(relay_url) as c:
        for ev in events:
            await c.publish(ev)
        assert await c.count("c1", {"authors": [keys.public_key], "kinds": [1]}) == ["COUNT", "c1", {"count": 3}]
        both = await c.count("c2", {"authors": [keys.public_key], "kinds": [1]}, {"ids": [events[0].id, events[3].id]})
        assert both == ["COUNT", "c2", {"count": 4}]  # OR, each event counted once
        none = await c.count("c3", {"authors": [Keys.generate().public_key]})
        assert none == ["COUNT", "c3", {"count": 0}]


# ------------------------------------------------------------------ subscriptions
async def test_reusing_sub_id_replaces_subscription(relay_url):
    keys = Keys.generate()
    async with RawClient(relay_url) as sub, RawClient(relay_url) as pub:
        await sub.req("s", {"authors": [keys.public_key], "kinds": [1]})
        await sub.req("s", {"authors": [keys.public_key], "kinds": [2]})
        k1 = _signed(keys, kind=1, content="old filter")
        k2 = _signed(keys, kind=2, content="new filter")
        await pub.publish(k1)
        await pub.publish(k2)
        first = await sub.recv_type("EVENT")
        assert first[1] == "s" and first[2]["id"] == k2.id  # k1 was not delivered before it


async def test_close_stops_delivery(relay_url):
    keys = Keys.generate()
    async with RawClient(relay_url) as sub, RawClient(relay_url) as pub:
        await sub.req("gone", {"authors": [keys.public_key], "kinds": [1]})
        await sub.req("marker", {"authors": [keys.public_key], "kinds": [3000]})
        await sub.send(["CLOSE", "gone"])
        # the CLOSE is processed before the next frame on the same connection: prove it with a COUNT
        await sub.count("sync", {"ids": ["00" * 32]})
        await pub.publish(_signed(keys, kind=1, content="after close"))
        marker = _signed(keys, kind=3000, content="marker")
        await pub.publish(marker)
        first = await sub.recv_type("EVENT")
        assert first[1] == "marker" and first[2]["id"] == marker.id


async def test_many_subscriptions_mixed_filters_fan_out_exactly(relay_url):
    alice, bob = Keys.generate(), Keys.generate()
    subs = {
        "by-author": {"authors": [alice.public_key]},
        "by-kind": {"kinds": [1111], "authors": [alice.public_key, bob.public_key]},
        "by-tag": {"#t": ["fanout-" + alice.public_key[:8]]},
        "by-two": {"authors": [bob.public_key], "kinds": [1111], "#t": ["fanout-" + alice.public_key[:8]]},
        "broad-since": {"since": int(time.time()) + 3600},  # matches nothing yet
    }
    ev = _signed(alice, kind=1111, content="fan", tags=[["t", "fanout-" + alice.public_key[:8]]])
    async with RawClient(relay_url) as sub, RawClient(relay_url) as pub:
        for sid, flt in subs.items():
            await sub.req(sid, flt)
        await pub.publish(ev)
        await pub.publish(_signed(bob, kind=1111, content="bob", tags=[["t", "nope"]]))
        got = [await sub.recv_type("EVENT") for _ in range(4)]
    assert sorted(m[1] for m in got) == ["by-author", "by-kind", "by-kind", "by-tag"]
