"""Index of live subscriptions, so fan-out touches only subscriptions that can match.

Each filter is filed under one key taken from its most selective field (ids, then
authors, then a tag, then kinds); filters with none of those go to a "broad" list.
For an event we look up its id, pubkey, kind and each single-letter tag value, union the
candidates, and run the exact `Filter.matches` only on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable, Iterator

from pylon.nostr import Event, Filter
from pylon.nostr.messages import event_frame_prefix

if TYPE_CHECKING:  # pragma: no cover
    from nexus_relay.connection import Connection


class Subscription:
    """One REQ of one connection."""

    __slots__ = ("conn", "sub_id", "filters", "prefix", "keys", "values", "held", "held_bytes", "__weakref__")

    def __init__(self, conn: "Connection", sub_id: str, filters: list[Filter], values: int = 0) -> None:
        self.conn = conn
        self.sub_id = sub_id
        self.filters = filters
        self.values = values  # filter values it holds (counted against the connection's limit)
        # live events that arrive while its stored events are being queried wait here
        # (as (id, frame)), so the client sees stored events, EOSE, then live ones
        self.held: list[tuple[str, str]] | None = None
        self.held_bytes = 0
        # the start of every EVENT frame sent for this subscription, computed once
        self.prefix = event_frame_prefix(sub_id)
        self.keys: list[Hashable] = []

    def matches(self, event: Event) -> bool:
        for flt in self.filters:
            if flt.matches(event):
                return True
        return False


def _keys_for(flt: Filter) -> list[Hashable] | None:
    """Index keys for a filter, or None when it belongs in the broad list."""
    if flt.ids is not None:
        return [("i", v) for v in flt.ids]
    if flt.authors is not None:
        return [("a", v) for v in flt.authors]
    if flt.tags:
        name, values = next(iter(flt.tags.items()))
        return [("t", name, v) for v in values]
    if flt.kinds is not None:
        return [("k", v) for v in flt.kinds]
    return None


_BROAD = ("*",)


class SubscriptionIndex:
    """key -> {Subscription: None}; insertion-ordered dicts make removal O(1)."""

    def __init__(self) -> None:
        self._by_key: dict[Hashable, dict[Subscription, None]] = {}
        self._broad: dict[Subscription, None] = {}
        self.size = 0

    def add(self, sub: Subscription) -> None:
        keys: list[Hashable] = []
        for flt in sub.filters:
            found = _keys_for(flt)
            if found is None:
                keys = [_BROAD]
                break
            keys.extend(found)
        sub.keys = list(dict.fromkeys(keys))
        for key in sub.keys:
            if key is _BROAD:
                self._broad[sub] = None
            else:
                self._by_key.setdefault(key, {})[sub] = None
        self.size += 1

    def remove(self, sub: Subscription) -> None:
        for key in sub.keys:
            if key is _BROAD:
                self._broad.pop(sub, None)
                continue
            bucket = self._by_key.get(key)
            if bucket is not None:
                bucket.pop(sub, None)
                if not bucket:
                    del self._by_key[key]
        sub.keys = []
        self.size -= 1

    def candidates(self, event: Event) -> Iterator[Subscription]:
        """Subscriptions that may match `event` (each at most once), not yet filtered exactly."""
        by_key = self._by_key
        buckets: list[dict[Subscription, None]] = []
        for key in (("i", event.id), ("a", event.pubkey), ("k", event.kind)):
            bucket = by_key.get(key)
            if bucket:
                buckets.append(bucket)
        for tag in event.tags:
            if len(tag) >= 2 and len(tag[0]) == 1:
                bucket = by_key.get(("t", tag[0], tag[1]))
                if bucket:
                    buckets.append(bucket)
        if self._broad:
            buckets.append(self._broad)
        if len(buckets) == 1:
            yield from list(buckets[0])
            return
        seen: set[int] = set()
        for bucket in buckets:
            for sub in list(bucket):
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield sub

    def matching(self, event: Event) -> Iterator[Subscription]:
        for sub in self.candidates(event):
            if sub.matches(event):
                yield sub

    def stats(self) -> dict[str, Any]:
        return {"keys": len(self._by_key), "broad": len(self._broad), "subscriptions": self.size}
