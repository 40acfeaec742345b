"""NIP-89 kind-31990 announcements: round trip, defensive parsing, newest per pubkey."""

from __future__ import annotations

import json

import pytest

from pylon.jobs.nip89 import (
    KIND_HANDLER, AnnouncementParseError, build_announcement, discovery_filter, newest_per_pubkey,
    parse_announcement,
)
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

A = Keys.generate()
B = Keys.generate()


def test_announcement_round_trip():
    event = build_announcement(A, models=["tiny", "big"], name="n", about="a", price_msat=1000,
                               price_per_1k_tokens_msat=50, relays=["ws://127.0.0.1:1", "junk"],
                               max_tokens=512, created_at=1000)
    assert event.kind == KIND_HANDLER and event.is_valid()
    assert ["k", "5050"] in event.tags and event.d_tag() == "pylon-5050"
    assert discovery_filter().matches(event)
    info = parse_announcement(event)
    assert (info.pubkey, info.name, info.about, info.models) == (A.public_key, "n", "a", ["tiny", "big"])
    assert (info.price_msat, info.price_per_1k_tokens_msat, info.max_tokens) == (1000, 50, 512)
    assert info.supports_nip44 and info.response_format and info.relays == ["ws://127.0.0.1:1"]
    assert info.version.startswith("pylon/") and info.last_seen == 1000 and info.event_id == event.id
    assert info.serves("tiny") and not info.serves("other") and info.serves(None)
    assert info.npub.startswith("npub1")


def _ann(keys, content, created_at=100, tags=(("d", "x"), ("k", "5050"))):
    return Event.build(keys, KIND_HANDLER, content if isinstance(content, str) else json.dumps(content),
                       [list(t) for t in tags], created_at=created_at)


def test_foreign_and_sloppy_announcements_are_read_field_by_field():
    info = parse_announcement(_ann(A, {"name": 5, "display_name": "x", "models": "solo", "price_msat": "100_000",
                                       "max_tokens": -3, "encryption": ["NIP44", 4], "relays": ["wss://r", 7],
                                       "response_format": "yes"}))
    assert info.name == "" and info.models == ["solo"] and info.price_msat == 100000
    assert info.max_tokens is None and info.encryption == ["nip44"] and info.relays == ["wss://r"]
    assert info.response_format is False
    assert parse_announcement(_ann(A, "")).models == []  # empty content is allowed by NIP-89
    assert parse_announcement(_ann(A, {"nip44": True})).supports_nip44


@pytest.mark.parametrize("event, fragment", [
    (_ann(A, "not json"), "not JSON"),
    (_ann(A, [1, 2]), "not a JSON object"),
    (_ann(A, {}, tags=(("d", "x"), ("k", "5000"))), "5050"),
    (Event.build(A, 1, "{}", [["k", "5050"]]), "not a kind-31990"),
])
def test_unusable_announcements(event, fragment):
    with pytest.raises(AnnouncementParseError, match=fragment):
        parse_announcement(event)


def test_newest_per_pubkey_skips_junk_and_orders_by_last_seen():
    events = [
        _ann(A, {"name": "old"}, created_at=100),
        _ann(A, {"name": "new"}, created_at=300),
        _ann(B, {"name": "b"}, created_at=200),
        _ann(B, "garbage", created_at=400),  # newest B is junk: the older usable one stays
    ]
    providers = newest_per_pubkey(events)
    assert [(p.pubkey, p.name, p.last_seen) for p in providers] == [
        (A.public_key, "new", 300), (B.public_key, "b", 200)]


def test_equal_timestamps_lower_id_wins():
    e1, e2 = _ann(A, {"name": "one"}, created_at=5), _ann(A, {"name": "two"}, created_at=5)
    winner = min((e1, e2), key=lambda e: e.id)
    assert newest_per_pubkey([e1, e2])[0].event_id == winner.id
    assert newest_per_pubkey([e2, e1])[0].event_id == winner.id
