"""Property/fuzz tests: random and malformed frames get a NOTICE, OK false or CLOSED, never
an exception, and the connection (and its neighbours) keep working afterwards.

The relay runs in a background thread with its own event loop, and hypothesis drives a
synchronous websockets client, so hundreds of examples share one relay.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from nexus_relay import RelayConfig, running_relay
from pylon.nostr import InvalidMessage, Keys
from pylon.nostr.messages import parse_client_message

from tests.relay.helpers import note

pytestmark = pytest.mark.embedded_relay

_counter = itertools.count()


class ThreadedRelay:
    def __init__(self) -> None:
        self.url = ""
        self.relay = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            # rate limits off: hypothesis sends thousands of frames on one connection
            async with running_relay(config=RelayConfig(events_per_second=0, reqs_per_second=0)) as relay:
                self.relay = relay
                self.url = relay.url
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced to the test
            self.error = exc
            self._ready.set()

    def __enter__(self) -> "ThreadedRelay":
        self._thread.start()
        assert self._ready.wait(30), "relay did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def threaded_relay():
    with ThreadedRelay() as relay:
        yield relay


@pytest.fixture(scope="module")
def fuzz_conn(threaded_relay):
    with connect(threaded_relay.url, max_size=None, compression=None) as ws:
        yield ws


def _roundtrip_after(ws, frame: str | bytes) -> list[list]:
    """Send `frame`, then a valid REQ; return the frames received before its EOSE."""
    sid = f"probe{next(_counter)}"
    ws.send(frame)
    ws.send(json.dumps(["REQ", sid, {"ids": ["0" * 64]}]))
    seen = []
    while True:
        msg = json.loads(ws.recv(timeout=10))
        if msg[:2] == ["EOSE", sid]:
            ws.send(json.dumps(["CLOSE", sid]))
            return seen
        assert msg[:2] != ["CLOSED", sid], msg
        seen.append(msg)


ALLOWED_REPLIES = {"NOTICE", "OK", "CLOSED", "EOSE", "EVENT", "COUNT"}


def _check_replies(replies: list[list]) -> None:
    for msg in replies:
        assert isinstance(msg, list) and msg and msg[0] in ALLOWED_REPLIES, msg
        if msg[0] == "NOTICE":
            assert isinstance(msg[1], str) and msg[1]
        if msg[0] == "OK":
            assert isinstance(msg[1], str) and isinstance(msg[2], bool) and isinstance(msg[3], str)
        if msg[0] == "CLOSED":
            assert isinstance(msg[2], str) and msg[2]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
msg_types = st.sampled_from(["EVENT", "REQ", "COUNT", "CLOSE", "AUTH", "NOTICE", "", "event", "OK"])
structured = st.builds(lambda t, rest: json.dumps([t, *rest]), msg_types, st.lists(json_values, max_size=4))

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(frame=st.text(max_size=200))
def test_random_text_frames(fuzz_conn, frame):
    _check_replies(_roundtrip_after(fuzz_conn, frame))


@SETTINGS
@given(frame=json_values.map(json.dumps))
def test_random_json_frames(fuzz_conn, frame):
    _check_replies(_roundtrip_after(fuzz_conn, frame))


@SETTINGS
@given(frame=structured)
def test_structured_malformed_messages(fuzz_conn, frame):
    _check_replies(_roundtrip_after(fuzz_conn, frame))


@SETTINGS
@given(data=st.binary(max_size=200))
def test_binary_frames_including_invalid_utf8(fuzz_conn, data):
    _check_replies(_roundtrip_after(fuzz_conn, data))


keys = Keys.generate()
_base_event = note(keys, "fuzzed").to_dict()


@SETTINGS
@given(field=st.sampled_from(sorted(_base_event)), value=json_values)
def test_events_with_one_field_replaced(fuzz_conn, field, value):
    ev = dict(_base_event)
    ev[field] = value
    fuzz_conn.send(json.dumps(["EVENT", ev]))
    while True:  # exactly one answer: OK (with the id when readable) or NOTICE
        reply = json.loads(fuzz_conn.recv(timeout=10))
        if reply[0] in ("OK", "NOTICE"):
            break
    _check_replies([reply])
    if reply[0] == "OK":
        assert reply[1] == ev["id"]
        if value != _base_event[field]:
            assert reply[2] is False, reply  # any change breaks the shape, the id or the signature
    else:
        assert not (isinstance(ev["id"], str) and len(ev["id"]) == 64 and set(ev["id"]) <= set("0123456789abcdef"))
    _check_replies(_roundtrip_after(fuzz_conn, "[]"))


EDGE_FRAMES = [
    "[" * 100_000 + "]" * 100_000,  # deep nesting
    '["EVENT",' * 5000,
    json.dumps(["EVENT", {**_base_event, "created_at": 10**30}]),
    json.dumps(["EVENT", {**_base_event, "kind": 1e308}]),
    json.dumps(["EVENT", {**_base_event, "kind": -1}]),
    json.dumps(["EVENT", {**_base_event, "created_at": -5}]),
    '["EVENT", {"id": "' + "0" * 64 + '", "created_at": ' + "9" * 5000 + "}]",  # over int digit limit
    '["REQ","x",{"limit":' + "9" * 5000 + "}]",
    '["REQ","x",{"since":1e999}]',
    '["REQ","x",{"kinds":[NaN]}]',
    '["REQ","x",{"#tt":["a"]}]',
    '["REQ","x",{"#":["a"]}]',
    '["REQ","x",{"ids":["XYZ"]}]',
    '["REQ","x",{"authors":"abc"}]',
    '["REQ","x",["not an object"]]',
    '["REQ",42,{}]',
    '["REQ","",{}]',
    '["CLOSE"]',
    '["CLOSE",1,2]',
    '["COUNT","c"]',
    '["AUTH","not an event"]',
    json.dumps(["EVENT", {**_base_event, "content": "\ud800 lone surrogate"}]),
    json.dumps(["EVENT", {**_base_event, "tags": [["t", "\udfff"]]}]),
    json.dumps(["EVENT", {**_base_event, "tags": [[1, 2]]}]),
    json.dumps(["EVENT", {**_base_event, "tags": "nope"}]),
    json.dumps(["EVENT", _base_event, "extra"]),
    "[]",
    "{}",
    "null",
    '"EVENT"',
    "",
    " ",
    "\x00",
]


@pytest.mark.parametrize("frame", EDGE_FRAMES, ids=range(len(EDGE_FRAMES)))
def test_edge_frames(fuzz_conn, frame):
    replies = _roundtrip_after(fuzz_conn, frame)
    _check_replies(replies)
    assert replies and all(m[0] in ("NOTICE", "OK", "CLOSED") for m in replies), replies
    assert all(m[2] is False for m in replies if m[0] == "OK")


def test_neighbours_unaffected_by_garbage(threaded_relay):
    """A subscriber keeps receiving while another connection sends garbage."""
    k = Keys.generate()
    with connect(threaded_relay.url) as sub, connect(threaded_relay.url) as noisy, connect(threaded_relay.url) as pub:
        sub.send(json.dumps(["REQ", "n", {"authors": [k.public_key]}]))
        assert json.loads(sub.recv(timeout=10)) == ["EOSE", "n"]
        for frame in EDGE_FRAMES:
            noisy.send(frame)
        for i in range(5):
            ev = note(k, f"still here {i}")
            pub.send(json.dumps(["EVENT", ev.to_dict()]))
            assert json.loads(pub.recv(timeout=10))[2] is True
            got = json.loads(sub.recv(timeout=10))
            assert got[0] == "EVENT" and got[2]["id"] == ev.id
        noisy.send(json.dumps(["REQ", "alive", {"limit": 0}]))
        while json.loads(noisy.recv(timeout=10)) != ["EOSE", "alive"]:
            pass
        assert threaded_relay.relay.stats.connections >= 3  # all three are still open and counted


@settings(max_examples=500, deadline=None)
@given(frame=st.one_of(st.text(max_size=100), structured, json_values.map(json.dumps)))
def test_parser_never_raises_anything_but_invalid_message(frame):
    try:
        parse_client_message(frame)
    except InvalidMessage:
        pass
