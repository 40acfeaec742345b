"""NIP-01 wire messages in both directions, parsed into types with precise errors.

Client -> relay: EVENT, REQ, CLOSE, AUTH, COUNT.
Relay -> client: EVENT, OK, EOSE, CLOSED, NOTICE, AUTH, COUNT.
Parsing raises InvalidMessage whose text is suitable for a NOTICE / OK / CLOSED reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from pylon.nostr.errors import InvalidEvent, InvalidMessage
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.jsonwire import dumps, loads
from pylon.nostr.keys import Keys
from pylon.nostr.kinds import AUTH

MAX_SUB_ID_LEN = 64


# ----------------------------------------------------------------- client -> relay
@dataclass(slots=True)
class ClientEvent:
    event: Event

    def to_json(self) -> str:
        return dumps(["EVENT", self.event.to_dict()])


@dataclass(slots=True)
class ClientReq:
    sub_id: str
    filters: list[Filter]

    def to_json(self) -> str:
        return dumps(["REQ", self.sub_id, *[f.to_dict() for f in self.filters]])


@dataclass(slots=True)
class ClientCount:
    sub_id: str
    filters: list[Filter]

    def to_json(self) -> str:
        return dumps(["COUNT", self.sub_id, *[f.to_dict() for f in self.filters]])


@dataclass(slots=True)
class ClientClose:
    sub_id: str

    def to_json(self) -> str:
        return dumps(["CLOSE", self.sub_id])


@dataclass(slots=True)
class ClientAuth:
    event: Event

    @classmethod
    def answer(cls, keys: Keys, relay_url: str, challenge: str) -> "ClientAuth":
        """NIP-42: the AUTH answering `challenge` from `relay_url` (a signed kind-22242 event)."""
        return cls(Event.build(keys, AUTH, "", [["relay", relay_url], ["challenge", challenge]]))

    def to_json(self) -> str:
        return dumps(["AUTH", self.event.to_dict()])


ClientMessage = Union[ClientEvent, ClientReq, ClientCount, ClientClose, ClientAuth]


def _sub_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidMessage("invalid: subscription id must be a non-empty string")
    if len(value) > MAX_SUB_ID_LEN:
        raise InvalidMessage(f"invalid: subscription id longer than {MAX_SUB_ID_LEN} chars")
    return value


def _load(frame: str | bytes) -> list[Any]:
    try:
        data = loads(frame)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidMessage(f"invalid: message is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise InvalidMessage("invalid: message must be a JSON array starting with a type string")
    return data


def parse_client_message(frame: str | bytes) -> ClientMessage:
    """Parse a frame a relay received. The event signature is NOT checked here."""
    data = _load(frame)
    kind = data[0]
    try:
        if kind == "EVENT":
            if len(data) != 2:
                raise InvalidMessage("invalid: EVENT takes exactly one event")
            return ClientEvent(Event.from_dict(data[1]))
        if kind in ("REQ", "COUNT"):
            if len(data) < 2:
                raise InvalidMessage(f"invalid: {kind} needs a subscription id")
            sub_id = _sub_id(data[1])
            filters = [Filter.parse(f) for f in data[2:]]
            return ClientReq(sub_id, filters) if kind == "REQ" else ClientCount(sub_id, filters)
        if kind == "CLOSE":
            if len(data) != 2:
                raise InvalidMessage("invalid: CLOSE takes exactly one subscription id")
            return ClientClose(_sub_id(data[1]))
        if kind == "AUTH":
            if len(data) != 2:
                raise InvalidMessage("invalid: AUTH takes exactly one event")
            return ClientAuth(Event.from_dict(data[1]))
    except InvalidEvent as exc:
        raise InvalidMessage(str(exc)) from None
    raise InvalidMessage(f"invalid: unknown message type {kind[:20]!r}")


# ----------------------------------------------------------------- relay -> client
# Frame builders: the one place relay -> client frames are spelled (the relay server uses
# them on its hot path, the dataclasses below for their to_json). Compact JSON, UTF-8 kept.
def ok_frame(event_id: str, accepted: bool, message: str = "") -> str:
    """["OK", id, accepted, message]; event ids are 64 lowercase hex (no escaping needed)."""
    text = dumps(message) if message else '""'
    return f'["OK","{event_id}",{"true" if accepted else "false"},{text}]'


def event_frame_prefix(sub_id: str) -> str:
    """'["EVENT",<sub_id>,' — an EVENT frame is this + the event's JSON + "]", so a relay can
    send stored event JSON without parsing it again; compute it once per subscription."""
    return '["EVENT",' + dumps(sub_id) + ","


def event_frame(sub_id: str, event_json: str) -> str:
    """["EVENT", sub_id, event] from the event's JSON text."""
    return event_frame_prefix(sub_id) + event_json + "]"


def eose_frame(sub_id: str) -> str:
    return dumps(["EOSE", sub_id])


def closed_frame(sub_id: str, message: str) -> str:
    return dumps(["CLOSED", sub_id, message])


def notice_frame(message: str) -> str:
    return dumps(["NOTICE", message])


def auth_frame(challenge: str) -> str:
    return dumps(["AUTH", challenge])


def count_frame(sub_id: str, count: int, approximate: bool = False) -> str:
    body: dict[str, Any] = {"count": count}
    if approximate:
        body["approximate"] = True
    return dumps(["COUNT", sub_id, body])


@dataclass(slots=True)
class RelayEvent:
    sub_id: str
    event: Event

    def to_json(self) -> str:
        return dumps(["EVENT", self.sub_id, self.event.to_dict()])


@dataclass(slots=True)
class RelayOk:
    event_id: str
    accepted: bool
    message: str = ""

    @property
    def prefix(self) -> str:
        """Machine-readable prefix such as 'duplicate', 'blocked', 'auth-required' ('' if none)."""
        return split_prefix(self.message)[0]

    def to_json(self) -> str:
        return ok_frame(self.event_id, self.accepted, self.message)


@dataclass(slots=True)
class RelayEose:
    sub_id: str

    def to_json(self) -> str:
        return eose_frame(self.sub_id)


@dataclass(slots=True)
class RelayClosed:
    sub_id: str
    message: str = ""

    @property
    def prefix(self) -> str:
        return split_prefix(self.message)[0]

    def to_json(self) -> str:
        return closed_frame(self.sub_id, self.message)


@dataclass(slots=True)
class RelayNotice:
    message: str

    def to_json(self) -> str:
        return notice_frame(self.message)


@dataclass(slots=True)
class RelayAuth:
    challenge: str

    def to_json(self) -> str:
        return auth_frame(self.challenge)


@dataclass(slots=True)
class RelayCount:
    sub_id: str
    count: int
    approximate: bool = False

    def to_json(self) -> str:
        return count_frame(self.sub_id, self.count, self.approximate)


RelayMessage = Union[RelayEvent, RelayOk, RelayEose, RelayClosed, RelayNotice, RelayAuth, RelayCount]

PREFIXES = (
    "duplicate", "pow", "blocked", "rate-limited", "invalid", "restricted",
    "mute", "error", "auth-required", "unsupported", "replaced",
)


def split_prefix(message: str) -> tuple[str, str]:
    """Split 'prefix: text' into ('prefix', 'text'); ('', message) if no known prefix."""
    head, sep, rest = message.partition(":")
    if sep and head in PREFIXES:
        return head, rest.strip()
    return "", message


def parse_relay_message(frame: str | bytes) -> RelayMessage:
    """Parse a frame a client received. The event signature is NOT checked here."""
    data = _load(frame)
    kind = data[0]
    try:
        if kind == "EVENT":
            if len(data) != 3 or not isinstance(data[1], str):
                raise InvalidMessage("invalid: relay EVENT must be [\"EVENT\", sub_id, event]")
            return RelayEvent(data[1], Event.from_dict(data[2]))
        if kind == "OK":
            if len(data) < 3 or not isinstance(data[1], str) or not isinstance(data[2], bool):
                raise InvalidMessage("invalid: OK must be [\"OK\", event_id, bool, message]")
            message = data[3] if len(data) > 3 and isinstance(data[3], str) else ""
            return RelayOk(data[1], data[2], message)
        if kind == "EOSE":
            if len(data) < 2 or not isinstance(data[1], str):
                raise InvalidMessage("invalid: EOSE must carry a subscription id")
            return RelayEose(data[1])
        if kind == "CLOSED":
            if len(data) < 2 or not isinstance(data[1], str):
                raise InvalidMessage("invalid: CLOSED must carry a subscription id")
            message = data[2] if len(data) > 2 and isinstance(data[2], str) else ""
            return RelayClosed(data[1], message)
        if kind == "NOTICE":
            return RelayNotice(data[1] if len(data) > 1 and isinstance(data[1], str) else "")
        if kind == "AUTH":
            if len(data) < 2 or not isinstance(data[1], str):
                raise InvalidMessage("invalid: AUTH must carry a challenge string")
            return RelayAuth(data[1])
        if kind == "COUNT":
            if len(data) < 3 or not isinstance(data[1], str) or not isinstance(data[2], dict):
                raise InvalidMessage("invalid: COUNT must be [\"COUNT\", sub_id, {count}]")
            count = data[2].get("count")
            if type(count) is not int:
                raise InvalidMessage("invalid: COUNT result needs an integer count")
            return RelayCount(data[1], count, bool(data[2].get("approximate", False)))
    except InvalidEvent as exc:
        raise InvalidMessage(str(exc)) from None
    raise InvalidMessage(f"invalid: unknown relay message type {kind[:20]!r}")
