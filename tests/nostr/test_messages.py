"""NIP-01 wire messages both directions: every type round-trips, errors are precise, and
random frames (hypothesis) raise nothing but InvalidMessage."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.nostr.errors import InvalidMessage
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.nostr.messages import (
    ClientAuth, ClientClose, ClientCount, ClientEvent, ClientReq, RelayAuth, RelayClosed, RelayCount,
    RelayEose, RelayEvent, RelayNotice, RelayOk, parse_client_message, parse_relay_message, split_prefix,
)

KEYS = Keys.generate()
EV = Event.build(KEYS, 1, "msg ☕ \u2028", [["t", "x"]])
FILTERS = [Filter.of(kinds=[1], authors=[KEYS.public_key]), Filter.of(t=["x"], since=5, limit=10)]


@pytest.mark.parametrize("msg", [
    ClientEvent(EV), ClientReq("sub1", FILTERS), ClientReq("s", []), ClientCount("c1", FILTERS),
    ClientClose("sub1"), ClientAuth(Event.build(KEYS, 22242, "", [["relay", "ws://x"], ["challenge", "c"]])),
])
def test_client_messages_round_trip(msg):
    back = parse_client_message(msg.to_json())
    assert type(back) is type(msg)
    assert back.to_json() == msg.to_json()


@pytest.mark.parametrize("msg", [
    RelayEvent("sub1", EV), RelayOk(EV.id, True, ""), RelayOk(EV.id, False, "blocked: go away"),
    RelayEose("sub1"), RelayClosed("sub1", "auth-required: sign in"), RelayNotice("hello"),
    RelayAuth("challenge-string"), RelayCount("c", 42), RelayCount("c", 7, approximate=True),
])
def test_relay_messages_round_trip(msg):
    back = parse_relay_message(msg.to_json())
    assert type(back) is type(msg) and back == msg
    assert parse_relay_message(msg.to_json().encode()) == msg  # bytes frames too


def test_prefixes():
    assert RelayOk("x", False, "blocked: go away").prefix == "blocked"
    assert RelayOk("x", True, "duplicate: have it").prefix == "duplicate"
    assert RelayClosed("s", "auth-required: sign in").prefix == "auth-required"
    assert RelayOk("x", False, "something: else").prefix == ""
    assert RelayOk("x", True, "").prefix == ""
    for p in ("pow", "rate-limited", "invalid", "restricted", "mute", "error", "unsupported"):
        assert split_prefix(f"{p}: detail") == (p, "detail")


def test_ok_and_closed_tolerate_missing_message():
    assert parse_relay_message('["OK","%s",true]' % EV.id) == RelayOk(EV.id, True, "")
    assert parse_relay_message('["CLOSED","s"]') == RelayClosed("s", "")
    assert parse_relay_message('["NOTICE"]') == RelayNotice("")


@pytest.mark.parametrize("frame,fragment", [
    ("", "not JSON"), ("nope", "not JSON"), ("{}", "JSON array starting with a type"),
    ("[]", "JSON array starting with a type"), ("[1]", "JSON array starting with a type"),
    ('["EVENT"]', "EVENT takes exactly one event"), ('["EVENT",{},{}]', "EVENT takes exactly one event"),
    ('["EVENT",[]]', "event must be a JSON object"), ('["EVENT",{"id":"x"}]', "missing field"),
    ('["REQ"]', "needs a subscription id"), ('["REQ",""]', "non-empty string"),
    ('["REQ",5]', "non-empty string"), ('["REQ","%s"]' % ("x" * 65), "longer than 64"),
    ('["REQ","s",[]]', "filter must be a JSON object"), ('["REQ","s",{"kinds":"1"}]', "'kinds'"),
    ('["COUNT"]', "COUNT needs a subscription id"), ('["CLOSE"]', "CLOSE takes exactly one"),
    ('["CLOSE","a","b"]', "CLOSE takes exactly one"), ('["AUTH"]', "AUTH takes exactly one"),
    ('["AUTH","challenge"]', "event must be a JSON object"), ('["PING"]', "unknown message type 'PING'"),
    ("[" * 5000 + "]" * 5000, "not JSON"),
])
def test_client_parse_errors_are_precise(frame, fragment):
    with pytest.raises(InvalidMessage) as info:
        parse_client_message(frame)
    assert fragment in str(info.value)
    assert str(info.value).startswith("invalid:")


@pytest.mark.parametrize("frame,fragment", [
    ('["EVENT","s"]', "relay EVENT must be"), ('["EVENT",1,{}]', "relay EVENT must be"),
    ('["EVENT","s",{}]', "missing field"), ('["OK","x"]', "OK must be"), ('["OK","x","true",""]', "OK must be"),
    ('["OK",1,true,""]', "OK must be"), ('["EOSE"]', "EOSE must carry"), ('["EOSE",1]', "EOSE must carry"),
    ('["CLOSED"]', "CLOSED must carry"), ('["AUTH"]', "AUTH must carry"), ('["AUTH",{}]', "AUTH must carry"),
    ('["COUNT","c"]', "COUNT must be"), ('["COUNT","c",{"count":"5"}]', "integer count"),
    ('["HELLO"]', "unknown relay message type"), ("null", "JSON array"),
])
def test_relay_parse_errors_are_precise(frame, fragment):
    with pytest.raises(InvalidMessage) as info:
        parse_relay_message(frame)
    assert fragment in str(info.value)


# -------------------------------------------------------------------- property tests
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
message_types = st.sampled_from(["EVENT", "REQ", "CLOSE", "AUTH", "COUNT", "OK", "EOSE", "CLOSED", "NOTICE", "X", ""])
event_like = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from([EV.id, "x", 1]), "pubkey": st.sampled_from([EV.pubkey, "", None]),
    "created_at": st.sampled_from([EV.created_at, -5, 1.5, "1", 2**70]), "kind": json_values,
    "tags": json_values, "content": json_values, "sig": st.sampled_from([EV.sig, "00"]),
})
filter_like = st.dictionaries(st.sampled_from(["ids", "authors", "kinds", "#e", "#ee", "since", "until", "limit", "search", "x"]),
                              json_values, max_size=4)
frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.tuples(message_types, st.lists(st.one_of(json_values, event_like, filter_like), max_size=4))
      .map(lambda t: json.dumps([t[0], *t[1]])),
)
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(frames)
def test_parse_client_message_raises_only_invalid_message(frame):
    try:
        msg = parse_client_message(frame)
    except InvalidMessage:
        return
    msg.to_json()  # whatever parsed can be serialized again


@PROPERTY
@given(frames)
def test_parse_relay_message_raises_only_invalid_message(frame):
    try:
        msg = parse_relay_message(frame)
    except InvalidMessage:
        return
    msg.to_json()


@PROPERTY
@given(st.lists(filter_like, max_size=3))
def test_random_filters_parse_or_fail_cleanly_and_match_without_error(filters):
    try:
        parsed = parse_client_message(json.dumps(["REQ", "s", *filters]))
    except InvalidMessage:
        return
    for flt in parsed.filters:
        flt.matches(EV)
        assert Filter.parse(flt.to_dict()).to_dict() == flt.to_dict()
