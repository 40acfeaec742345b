"""pylon.nostr.jsonwire must produce exactly the standard library's NIP-01 serialisation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylon.nostr.jsonwire import dumps, dumps_bytes, loads

# any valid Unicode text: control characters, DEL, U+2028, astral planes (no lone surrogates)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def stdlib(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(pubkey=TEXT, created_at=st.integers(0, 2**53), kind=st.integers(0, 65535),
       tags=st.lists(st.lists(TEXT, max_size=4), max_size=4), content=TEXT)
def test_event_id_serialisation_is_byte_for_byte_the_standard_one(pubkey, created_at, kind, tags, content):
    obj = [0, pubkey, created_at, kind, tags, content]
    assert dumps_bytes(obj) == stdlib(obj)
    assert dumps(obj) == stdlib(obj).decode("utf-8")
    assert loads(dumps(obj)) == obj


def test_control_characters_use_the_short_escapes():
    assert dumps(["\n\t\r\b\f\"\\\x01\x7f\u2028"]) == '["\\n\\t\\r\\b\\f\\"\\\\\\u0001\x7f\u2028"]'


def test_a_lone_surrogate_has_no_id_but_parses_and_frames_like_the_standard_library():
    with pytest.raises(UnicodeEncodeError):
        dumps_bytes([0, "\ud800"])
    assert loads('["\\ud800"]') == ["\ud800"]  # json takes it; the event layer refuses it later
    assert dumps(["\ud800"]) == json.dumps(["\ud800"], separators=(",", ":"), ensure_ascii=False)


def test_what_orjson_refuses_falls_back_not_over():
    assert loads("[18446744073709551615]") == [2**64 - 1]  # beyond 64 bits orjson gives a float (docstring)
    assert dumps([2**70]) == f"[{2**70}]"
    with pytest.raises((ValueError, RecursionError)):
        loads("[" * 100_000)
    with pytest.raises(ValueError):
        loads("not json")
