"""NIP-01 filters: parsing with precise errors, and matching against events.

Fields AND together, a list of filters ORs; `since <= created_at <= until` inclusive;
`#x` tag filters match the first value of tags named x (single-letter names only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from pylon.nostr.errors import InvalidMessage
from pylon.nostr.event import Event

_HEX = frozenset("0123456789abcdef")


def _str_list(value: Any, name: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InvalidMessage(f"invalid: filter field {name!r} must be an array of strings")
    return frozenset(value)


def _hex_list(value: Any, name: str) -> frozenset[str]:
    items = _str_list(value, name)
    for x in items:
        if len(x) != 64 or not _HEX.issuperset(x):
            raise InvalidMessage(f"invalid: filter field {name!r} must hold 64-char lowercase hex")
    return items


MAX_INT = 2**53 - 1  # JSON-safe integers only: larger timestamps/limits are bogus (and overflow SQLite)


def _int(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidMessage(f"invalid: filter field {name!r} must be a non-negative integer")
    if value > MAX_INT:
        raise InvalidMessage(f"invalid: filter field {name!r} is out of range (max 2^53-1)")
    return value


@dataclass(slots=True)
class Filter:
    """One NIP-01 filter. Empty fields (None) match everything."""

    ids: frozenset[str] | None = None
    authors: frozenset[str] | None = None
    kinds: frozenset[int] | None = None
    tags: dict[str, frozenset[str]] = field(default_factory=dict)
    since: int | None = None
    until: int | None = None
    limit: int | None = None
    search: str | None = None

    @classmethod
    def parse(cls, data: Any) -> "Filter":
        if not isinstance(data, dict):
            raise InvalidMessage("invalid: filter must be a JSON object")
        flt = cls()
        for key, value in data.items():
            if key == "ids":
                flt.ids = _hex_list(value, key)
            elif key == "authors":
                flt.authors = _hex_list(value, key)
            elif key == "kinds":
                if not isinstance(value, list) or not all(type(k) is int and 0 <= k <= 65535 for k in value):
                    raise InvalidMessage("invalid: filter field 'kinds' must be an array of integers 0-65535")
                flt.kinds = frozenset(value)
            elif key == "since":
                flt.since = _int(value, key)
            elif key == "until":
                flt.until = _int(value, key)
            elif key == "limit":
                flt.limit = _int(value, key)
            elif key == "search":
                if not isinstance(value, str):
                    raise InvalidMessage("invalid: filter field 'search' must be a string")
                flt.search = value
            elif len(key) == 2 and key[0] == "#" and key[1].isalpha():
                flt.tags[key[1]] = _str_list(value, key)
            else:
                # Unknown fields are ignored as NIP-01 relays do; a wrong '#' shape is an error.
                if key.startswith("#"):
                    raise InvalidMessage(f"invalid: tag filter {key!r} must be '#' plus one letter")
        return flt

    @classmethod
    def of(cls, **fields: Any) -> "Filter":
        """Convenient constructor: Filter.of(kinds=[1], authors=[pk], e=[id], since=…)."""
        data: dict[str, Any] = {}
        for key, value in fields.items():
            if key in ("ids", "authors", "kinds", "since", "until", "limit", "search"):
                data[key] = list(value) if isinstance(value, (set, frozenset, tuple)) else value
            else:
                data["#" + key] = list(value)
        return cls.parse(data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ids is not None:
            out["ids"] = sorted(self.ids)
        if self.authors is not None:
            out["authors"] = sorted(self.authors)
        if self.kinds is not None:
            out["kinds"] = sorted(self.kinds)
        for name, values in self.tags.items():
            out["#" + name] = sorted(values)
        if self.since is not None:
            out["since"] = self.since
        if self.until is not None:
            out["until"] = self.until
        if self.limit is not None:
            out["limit"] = self.limit
        if self.search is not None:
            out["search"] = self.search
        return out

    def matches(self, event: Event) -> bool:
        if self.ids is not None and event.id not in self.ids:
            return False
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        if self.authors is not None and event.pubkey not in self.authors:
            return False
        if self.since is not None and event.created_at < self.since:
            return False
        if self.until is not None and event.created_at > self.until:
            return False
        for name, wanted in self.tags.items():
            if not any(len(t) >= 2 and t[0] == name and t[1] in wanted for t in event.tags):
                return False
        if self.search is not None and self.search.lower() not in event.content.lower():
            return False
        return True

    def with_since(self, since: int) -> "Filter":
        """A copy with `since` raised to at least `since` (used when resubscribing)."""
        copy = Filter(self.ids, self.authors, self.kinds, dict(self.tags), self.since, self.until, self.limit, self.search)
        copy.since = since if self.since is None else max(self.since, since)
        return copy


def matches_any(filters: Iterable[Filter], event: Event) -> bool:
    return any(f.matches(event) for f in filters)
