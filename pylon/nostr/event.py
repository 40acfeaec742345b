"""NIP-01 events: exact serialization, id, BIP-340 signatures, and defensive parsing.

The id is sha256 over `[0,pubkey,created_at,kind,tags,content]` serialized with no
whitespace and *without* ASCII escaping (json's default `ensure_ascii=True` yields a
wrong id for any non-ASCII content).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from pylon.nostr.errors import InvalidEvent
from pylon.nostr.jsonwire import dumps, dumps_bytes, loads
from pylon.nostr.keys import Keys, verify_schnorr

_HEX = frozenset("0123456789abcdef")
_MAX_TS = 2**53  # anything beyond is certainly bogus and breaks JS peers


def serialize_for_id(pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str) -> bytes:
    """The canonical NIP-01 byte string whose sha256 is the event id.

    Raises InvalidEvent for text that is not valid Unicode (a lone surrogate such as "\\ud800"
    parsed from the wire has no UTF-8 form, hence no id).
    """
    try:
        return dumps_bytes([0, pubkey, created_at, kind, tags, content])
    except UnicodeEncodeError:
        raise InvalidEvent("invalid: event text contains a lone surrogate (not valid Unicode)") from None


def compute_event_id(pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str) -> str:
    return hashlib.sha256(serialize_for_id(pubkey, created_at, kind, tags, content)).hexdigest()


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and _HEX.issuperset(value)


@dataclass(slots=True)
class Event:
    """A Nostr event. Plain dataclass: it sits on every hot path (relay, pool)."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: list[list[str]]
    content: str
    sig: str
    _verified: bool = field(default=False, repr=False, compare=False)

    # -- building ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        keys: Keys,
        kind: int,
        content: str = "",
        tags: Iterable[Iterable[str]] = (),
        created_at: int | None = None,
    ) -> "Event":
        """Create and sign an event with `keys`."""
        tag_list = [[str(x) for x in tag] for tag in tags]
        ts = int(time.time()) if created_at is None else int(created_at)
        event_id = compute_event_id(keys.public_key, ts, kind, tag_list, content)
        sig = keys.sign(bytes.fromhex(event_id))
        return cls(event_id, keys.public_key, ts, kind, tag_list, content, sig, True)

    # -- checking ---------------------------------------------------------------------
    def compute_id(self) -> str:
        return compute_event_id(self.pubkey, self.created_at, self.kind, self.tags, self.content)

    def id_matches(self) -> bool:
        return self.compute_id() == self.id

    def signature_valid(self) -> bool:
        return verify_schnorr(self.pubkey, self.sig, bytes.fromhex(self.id))

    def verify(self) -> None:
        """Raise InvalidEvent unless the id matches the content and the signature is valid."""
        if self._verified:
            return
        if not self.id_matches():
            raise InvalidEvent("invalid: event id does not match its content")
        if not self.signature_valid():
            raise InvalidEvent("invalid: bad signature")
        self._verified = True

    def is_valid(self) -> bool:
        try:
            self.verify()
            return True
        except InvalidEvent:
            return False

    # -- tags ---------------------------------------------------------------------------
    def tag_values(self, name: str) -> list[str]:
        """First values of every tag named `name` (what NIP-01 indexes)."""
        return [t[1] for t in self.tags if len(t) >= 2 and t[0] == name]

    def first_tag(self, name: str) -> list[str] | None:
        for t in self.tags:
            if t and t[0] == name:
                return t
        return None

    def d_tag(self) -> str:
        """The `d` identifier of an addressable event ("" when absent)."""
        for t in self.tags:
            if t and t[0] == "d":
                return t[1] if len(t) > 1 else ""
        return ""

    def expiration(self) -> int | None:
        """NIP-40 expiration timestamp, or None if absent or malformed."""
        for t in self.tags:
            if len(t) >= 2 and t[0] == "expiration":
                try:
                    return int(t[1])
                except ValueError:
                    return None
        return None

    # -- wire -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": self.tags,
            "content": self.content,
            "sig": self.sig,
        }

    def to_json(self) -> str:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> "Event":
        """Parse a wire object, checking shapes (not the signature: call verify())."""
        if not isinstance(data, dict):
            raise InvalidEvent("invalid: event must be a JSON object")
        try:
            event_id = data["id"]
            pubkey = data["pubkey"]
            created_at = data["created_at"]
            kind = data["kind"]
            tags = data["tags"]
            content = data["content"]
            sig = data["sig"]
        except KeyError as exc:
            raise InvalidEvent(f"invalid: event is missing field {exc.args[0]!r}") from None
        if not _is_hex(event_id, 64):
            raise InvalidEvent("invalid: id must be 64 lowercase hex chars")
        if not _is_hex(pubkey, 64):
            raise InvalidEvent("invalid: pubkey must be 64 lowercase hex chars")
        if not _is_hex(sig, 128):
            raise InvalidEvent("invalid: sig must be 128 lowercase hex chars")
        if type(created_at) is not int or not (0 <= created_at < _MAX_TS):
            raise InvalidEvent("invalid: created_at must be a non-negative integer")
        if type(kind) is not int or not (0 <= kind <= 65535):
            raise InvalidEvent("invalid: kind must be an integer 0-65535")
        if not isinstance(content, str):
            raise InvalidEvent("invalid: content must be a string")
        if not isinstance(tags, list):
            raise InvalidEvent("invalid: tags must be an array")
        for tag in tags:
            if not isinstance(tag, list) or not all(isinstance(x, str) for x in tag):
                raise InvalidEvent("invalid: every tag must be an array of strings")
        return cls(event_id, pubkey, created_at, kind, tags, content, sig)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Event":
        try:
            data = loads(text)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidEvent(f"invalid: event is not JSON: {exc}") from None
        return cls.from_dict(data)
