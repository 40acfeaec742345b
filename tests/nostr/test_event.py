"""Events: NIP-01 id over every JSON escape, BIP-340 sign/verify, cross-checked with pynostr
and rust-nostr (nostr-sdk) in both directions; defensive parsing."""

from __future__ import annotations

import asyncio
import json

import nostr_sdk
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynostr.event import Event as PynostrEvent

from pylon.nostr.errors import InvalidEvent
from pylon.nostr.event import Event, compute_event_id, serialize_for_id
from pylon.nostr.keys import Keys

CONTENTS = [
    "",
    "plain ascii",
    "ünïcödé — ☕ 日本語",
    "emoji 🦄🏳️‍🌈 and a surrogate-pair heavy 𝄞",
    'quote " backslash \\ slash /',
    "newline \n cr \r tab \t backspace \b formfeed \f",
    "".join(chr(c) for c in range(0x20)) + "\x7f",  # every control char + DEL
    "line separator \u2028 paragraph separator \u2029",
    "nul \x00 inside",
    "</script><!-- html-ish -->",
]
TAGS = [[], [["e", "a" * 64], ["p", "b" * 64, "wss://relay.example", "mention"]], [["t", "ünï\n\"x\""], ["empty"], [""]]]


def test_serialization_escapes_exactly_as_nip01():
    # NIP-01: escape \n \" \\ \r \t \b \f as such; other control chars as \u00XX; nothing else.
    raw = serialize_for_id("a" * 64, 1, 1, [], "\n\"\\\r\t\b\f\x01\x1f\u2028☕/").decode()
    assert raw == '[0,"' + "a" * 64 + '",1,1,[],"\\n\\"\\\\\\r\\t\\b\\f\\u0001\\u001f\u2028☕/"]'


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("tags", TAGS)
def test_id_matches_pynostr(content, tags):
    keys = Keys.generate()
    ev = Event.build(keys, 1, content, tags, created_at=1_700_000_000)
    theirs = PynostrEvent(content=content, pubkey=keys.public_key, created_at=1_700_000_000, kind=1, tags=tags)
    assert ev.id == theirs.id
    theirs.sig = ev.sig
    assert theirs.verify()  # pynostr accepts our signature


def _sdk_sign(keys: Keys, kind: int, content: str, tags: list[list[str]], created_at: int) -> nostr_sdk.Event:
    sdk_keys = nostr_sdk.Keys.parse(keys.secret_hex)
    unsigned = (
        nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), content)
        .tags([nostr_sdk.Tag.parse(t) for t in tags])
        .custom_created_at(nostr_sdk.Timestamp.from_secs(created_at))
        .finalize_unsigned(sdk_keys.public_key())
    )
    result = sdk_keys.sign_event(unsigned)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


@pytest.mark.parametrize("content", CONTENTS)
def test_ids_and_signatures_interoperate_with_nostr_sdk(content):
    keys = Keys.generate()
    tags = [["t", "x"], ["e", "c" * 64, "", "root"]]
    sdk_event = _sdk_sign(keys, 1, content, tags, 1_700_000_001)
    # theirs -> ours: parse their JSON, same id, signature verifies
    ours = Event.from_json(sdk_event.as_json())
    assert ours.id == sdk_event.id().to_hex() == ours.compute_id()
    assert ours.content == content
    ours.verify()
    # ours -> theirs: nostr-sdk parses and verifies our event
    mine = Event.build(keys, 1, content, tags, created_at=1_700_000_001)
    assert mine.id == ours.id  # same fields, same id
    parsed = nostr_sdk.Event.from_json(mine.to_json())
    assert parsed.verify() and parsed.id().to_hex() == mine.id


def test_verify_detects_tampering_precisely():
    keys = Keys.generate()
    ev = Event.build(keys, 1, "hello")
    fresh = Event.from_dict(ev.to_dict())
    fresh.verify()
    assert fresh.is_valid()

    changed = Event.from_dict({**ev.to_dict(), "content": "hellO"})
    with pytest.raises(InvalidEvent, match="id does not match"):
        changed.verify()

    other_sig = Event.build(keys, 1, "other").sig
    bad_sig = Event.from_dict({**ev.to_dict(), "sig": other_sig})
    with pytest.raises(InvalidEvent, match="bad signature"):
        bad_sig.verify()
    assert not bad_sig.is_valid()

    wrong_author = Keys.generate().public_key
    d = {**ev.to_dict(), "pubkey": wrong_author}
    d["id"] = compute_event_id(wrong_author, ev.created_at, ev.kind, ev.tags, ev.content)
    with pytest.raises(InvalidEvent, match="bad signature"):
        Event.from_dict(d).verify()


BASE = Event.build(Keys.generate(), 1, "x").to_dict()


@pytest.mark.parametrize("patch,fragment", [
    ({"id": "A" * 64}, "id must be"),
    ({"id": "a" * 63}, "id must be"),
    ({"pubkey": 5}, "pubkey must be"),
    ({"sig": "ab"}, "sig must be"),
    ({"created_at": -1}, "created_at"),
    ({"created_at": 1.5}, "created_at"),
    ({"created_at": True}, "created_at"),
    ({"created_at": 2**60}, "created_at"),
    ({"kind": 70000}, "kind"),
    ({"kind": "1"}, "kind"),
    ({"content": None}, "content"),
    ({"tags": {}}, "tags must be"),
    ({"tags": [["ok"], [1]]}, "every tag"),
    ({"tags": ["flat"]}, "every tag"),
])
def test_from_dict_errors_name_the_field(patch, fragment):
    with pytest.raises(InvalidEvent, match=fragment):
        Event.from_dict({**BASE, **patch})


@pytest.mark.parametrize("field", ["id", "pubkey", "created_at", "kind", "tags", "content", "sig"])
def test_missing_field(field):
    d = dict(BASE)
    del d[field]
    with pytest.raises(InvalidEvent, match=f"missing field '{field}'"):
        Event.from_dict(d)


@pytest.mark.parametrize("bad", ["[]", "not json", "null", b"\xff\xfe", "{" * 100000])
def test_from_json_garbage(bad):
    with pytest.raises(InvalidEvent):
        Event.from_json(bad)


def test_tag_helpers():
    keys = Keys.generate()
    ev = Event.build(keys, 30000, "", [["d", "slot"], ["e", "1", "x"], ["e", "2"], ["expiration", "123"], ["e"]])
    assert ev.tag_values("e") == ["1", "2"]
    assert ev.first_tag("e") == ["e", "1", "x"]
    assert ev.d_tag() == "slot" and ev.expiration() == 123
    assert Event.build(keys, 1, "", [["expiration", "soon"]]).expiration() is None
    assert Event.build(keys, 30000, "", [["d"]]).d_tag() == ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.text(), tags=st.lists(st.lists(st.text(max_size=20), min_size=1, max_size=4), max_size=5),
       kind=st.integers(0, 65535), created_at=st.integers(0, 2**40))
def test_any_content_round_trips_and_matches_pynostr(content, tags, kind, created_at):
    keys = KEYS
    ev = Event.build(keys, kind, content, tags, created_at=created_at)
    back = Event.from_json(ev.to_json())
    back.verify()
    assert back == ev
    theirs = PynostrEvent(content=content, pubkey=keys.public_key, created_at=created_at, kind=kind, tags=tags)
    assert theirs.id == ev.id
    assert json.loads(ev.to_json())["content"] == content


KEYS = Keys.generate()


def test_lone_surrogate_from_the_wire_is_an_invalid_event_not_a_crash():
    d = Event.build(KEYS, 1, "x").to_dict()
    d["content"] = "\ud800"
    ev = Event.from_json(json.dumps(d))  # json.loads happily yields a lone surrogate
    with pytest.raises(InvalidEvent, match="surrogate"):
        ev.verify()
    assert not ev.is_valid()
    with pytest.raises(InvalidEvent):
        Event.build(KEYS, 1, "bad \udfff")
