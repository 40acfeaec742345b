"""One place for every limit and switch of the relay (modelled on strfry's defaults).

Every limit here is enforced by the relay *and* published in the NIP-11 `limitation`
object, so clients can read what they will be held to.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RelayConfig:
    """Relay settings. Plain dataclass: read on every message, no validation cost."""

    # --- NIP-11 identity -------------------------------------------------------------
    name: str = "nexus"
    description: str = "Pylon's embedded Nostr relay"
    pubkey: str = ""
    contact: str = ""
    public_url: str = ""  # ws(s):// URL clients use; also accepted in NIP-42 `relay` tags

    # --- limits (strfry defaults) ----------------------------------------------------
    max_message_bytes: int = 131072
    max_event_bytes: int = 65536
    max_subscriptions: int = 200  # per connection
    max_filters: int = 200  # per REQ / COUNT
    max_limit: int = 500  # `limit` is clamped to this (also the default when absent)
    max_subid_length: int = 64
    max_event_tags: int = 2000
    max_future_seconds: int = 900  # created_at at most now + this
    ephemeral_max_age_seconds: int = 60  # older ephemeral events are rejected
    min_pow_difficulty: int = 0  # NIP-13 leading zero bits of the id (0 = off)

    # --- per-connection rate limits (token buckets; rate 0 = unlimited) ----------------
    events_per_second: float = 1000.0
    events_burst: int = 5000
    reqs_per_second: float = 200.0  # REQ and COUNT together
    reqs_burst: int = 1000

    # --- NIP-42 ----------------------------------------------------------------------
    auth_required: bool = False  # when on: challenge on connect, REQ/EVENT need AUTH first
    auth_max_age_seconds: int = 600  # AUTH event created_at within this of now

    # --- storage / housekeeping --------------------------------------------------------
    fsync: bool = True  # synchronous=FULL in WAL mode: an OK'd event survives a power cut
    # Live subscribers get a regular event as soon as it passed every check, before its group
    # commit (~3 ms of fsync here); its OK still waits for the commit. Off: fan-out after it.
    fanout_before_commit: bool = True
    max_batch: int = 2000  # events per group-commit transaction
    purge_interval_seconds: float = 60.0  # NIP-40 expired-event purge period

    # --- per-connection memory budgets (bytes; see docs/HARDENING.md) -------------------
    # Frames waiting for a reader that does not keep up, plus the stored events of a query
    # not yet handed to the socket, count against one budget; over it the connection is
    # told why (NOTICE) and closed, as strfry does with a slow consumer.
    max_outbox_bytes: int = 8 << 20
    max_filter_values: int = 1000  # ids+authors+kinds+tag values in one filter
    max_subscription_values: int = 5000  # the same, over all live subscriptions of a connection
    max_numeric: int = 2**53 - 1  # since/until/limit/created_at/expiration: larger is `invalid:`

    # --- queries (REQ / COUNT) run on a thread with its own read connection ---------------
    query_max_seconds: float = 0.5  # one query's wall-time budget; over it: CLOSED error:
    query_max_rows: int = 10000  # stored events one REQ returns over all its filters
    query_max_bytes: int = 4 << 20  # ... and their size; past either, the rest is cut (EOSE follows)
    query_seconds_per_second: float = 0.25  # query time one connection may use (token bucket)
    query_seconds_burst: float = 2.0
    max_pending_queries: int = 20  # REQ/COUNT queued per connection before `rate-limited:`

    # --- transport ---------------------------------------------------------------------
    ping_interval: float | None = 20.0
    compression: bool = False  # permessage-deflate costs CPU and ~100 KB per connection
    supported_nips: list[int] = field(default_factory=lambda: [1, 9, 11, 13, 40, 42, 45])
    software: str = "https://github.com/pylon-swarm/pylon (nexus_relay)"
    version: str = "0.1.0"

    def hard_frame_cap(self) -> int:
        """Frames up to this size are read (to answer them properly); larger ones close the socket."""
        return max(4 * self.max_message_bytes, 1 << 20)
