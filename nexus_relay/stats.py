"""Counters kept on the relay, cheap enough for the hot path.

The ops helper exports them to Prometheus; here they are plain ints and Counters so the
relay itself has no metrics dependency. `snapshot()` gives a JSON-friendly dict.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator


class RelayStats:
    """Gauges (connections, subscriptions) and monotonic counters, dict-like via snapshot()."""

    __slots__ = (
        "connections", "connections_total", "subscriptions", "events_stored", "events_ephemeral",
        "events_deleted", "events_expired", "duplicates", "commits", "messages", "rejections",
    )

    def __init__(self) -> None:
        self.connections = 0  # gauge: open websocket connections
        self.connections_total = 0
        self.subscriptions = 0  # gauge: live REQ subscriptions over all connections
        self.events_stored = 0
        self.events_ephemeral = 0
        self.events_deleted = 0  # removed by NIP-09 deletions or replacement
        self.events_expired = 0  # removed by the NIP-40 purge
        self.duplicates = 0
        self.commits = 0  # group-commit transactions
        self.messages: Counter[str] = Counter()  # received, by type: EVENT, REQ, ..., INVALID
        self.rejections: Counter[str] = Counter()  # by reason prefix: invalid, rate-limited, ...

    def reject(self, message: str) -> None:
        """Count a refusal under the machine-readable prefix of its message."""
        head, sep, _ = message.partition(":")
        self.rejections[head if sep else "other"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "connections_total": self.connections_total,
            "subscriptions": self.subscriptions,
            "events_stored": self.events_stored,
            "events_ephemeral": self.events_ephemeral,
            "events_deleted": self.events_deleted,
            "events_expired": self.events_expired,
            "duplicates": self.duplicates,
            "commits": self.commits,
            "messages": dict(self.messages),
            "rejections": dict(self.rejections),
        }

    # dict-like read access for exporters
    def __getitem__(self, key: str) -> Any:
        return self.snapshot()[key]

    def keys(self) -> Iterator[str]:
        return iter(self.snapshot())

    def items(self):  # noqa: ANN201 - mirrors dict.items
        return self.snapshot().items()
