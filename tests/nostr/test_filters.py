"""NIP-01 filters: every field, AND within a filter, OR across, inclusive since/until,
tag filters on the first value only, parse errors, round trips."""

from __future__ import annotations

import pytest

from pylon.nostr.errors import InvalidMessage
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter, matches_any
from pylon.nostr.keys import Keys

ALICE, BOB = Keys.generate(), Keys.generate()
EV = Event.build(ALICE, 1, "Hello Nostr World", [["e", "e1" * 32, "wss://r"], ["p", BOB.public_key], ["t", "first", "second"], ["t", "other"]], created_at=1000)


def f(**data) -> Filter:
    return Filter.parse(data)


def test_empty_filter_matches_everything():
    assert Filter().matches(EV) and f().matches(EV)


@pytest.mark.parametrize("flt,expected", [
    ({"ids": [EV.id]}, True), ({"ids": ["0" * 64]}, False), ({"ids": ["0" * 64, EV.id]}, True),
    ({"authors": [ALICE.public_key]}, True), ({"authors": [BOB.public_key]}, False),
    ({"kinds": [1]}, True), ({"kinds": [0, 2]}, False), ({"kinds": []}, False),
    ({"since": 1000}, True), ({"since": 1001}, False), ({"since": 999}, True),
    ({"until": 1000}, True), ({"until": 999}, False), ({"until": 1001}, True),
    ({"since": 1000, "until": 1000}, True),
    ({"#e": ["e1" * 32]}, True), ({"#e": ["wss://r"]}, False),
    ({"#p": [BOB.public_key]}, True), ({"#p": [ALICE.public_key]}, False),
    ({"#t": ["first"]}, True), ({"#t": ["other"]}, True),
    ({"#t": ["second"]}, False),  # only a tag's first value is indexed
    ({"#x": ["anything"]}, False),
    ({"search": "nostr"}, True), ({"search": "absent"}, False),
    ({"limit": 0}, True),  # limit bounds stored results, it does not filter
])
def test_each_field(flt, expected):
    assert f(**flt).matches(EV) is expected


def test_fields_and_together_filters_or():
    match = {"kinds": [1], "authors": [ALICE.public_key]}
    miss = {"kinds": [1], "authors": [BOB.public_key]}
    assert f(**match).matches(EV)
    assert not f(**miss).matches(EV)
    assert matches_any([f(**miss), f(**match)], EV)
    assert not matches_any([f(**miss), f(kinds=[7])], EV)
    assert not matches_any([], EV)


def test_parse_errors_are_precise():
    cases = [
        ([], "must be a JSON object"),
        ({"ids": "abc"}, "'ids' must be an array"),
        ({"ids": ["ABC" + "0" * 61]}, "'ids' must hold 64-char lowercase hex"),
        ({"authors": ["zz"]}, "'authors' must hold"),
        ({"kinds": [1, "2"]}, "'kinds' must be an array of integers"),
        ({"kinds": [70000]}, "'kinds'"),
        ({"since": -1}, "'since' must be a non-negative integer"),
        ({"until": "5"}, "'until'"),
        ({"limit": 1.5}, "'limit'"),
        ({"limit": True}, "'limit'"),
        ({"#e": "x"}, "'#e' must be an array"),
        ({"#e": [1]}, "'#e' must be an array of strings"),
        ({"#ee": ["x"]}, "must be '#' plus one letter"),
        ({"#1": ["x"]}, "must be '#' plus one letter"),
        ({"search": 5}, "'search' must be a string"),
    ]
    for data, fragment in cases:
        with pytest.raises(InvalidMessage) as info:
            Filter.parse(data)
        assert fragment in str(info.value), (data, str(info.value))


def test_unknown_fields_are_ignored():
    assert f(kinds=[1], foo="bar").matches(EV)


def test_round_trip_and_of():
    data = {"ids": [EV.id], "authors": [ALICE.public_key], "kinds": [1, 5], "#e": ["x", "y"],
            "since": 10, "until": 20, "limit": 5, "search": "q"}
    assert Filter.parse(data).to_dict() == {**data, "kinds": [1, 5], "#e": ["x", "y"]}
    built = Filter.of(kinds={1}, authors=(ALICE.public_key,), t=["first"], since=1000)
    assert built.matches(EV)
    assert built.to_dict() == {"authors": [ALICE.public_key], "kinds": [1], "#t": ["first"], "since": 1000}


def test_with_since_raises_but_never_lowers():
    flt = f(kinds=[1], since=50, limit=3)
    assert flt.with_since(100).since == 100
    assert flt.with_since(10).since == 50
    assert flt.since == 50  # original untouched
    assert f(kinds=[1]).with_since(7).to_dict() == {"kinds": [1], "since": 7}
