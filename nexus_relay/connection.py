"""Per-connection state: subscriptions, NIP-42 identity, rate limits, and outgoing frames.

Sending: most frames go straight to the transport without a coroutine per message (the
relay answers thousands of OKs and EVENTs per second and `await ws.send()` per frame is
a large share of that cost). When the socket is back-pressured, frames queue in a backlog
drained by one task with websockets' own `send()`, preserving order.

Memory is budgeted in bytes, not frames (50,000 frames of 64 KB each is 3 GB): the backlog
plus the live events held for a subscription whose stored events are still being queried
may not exceed `max_bytes`. A connection that goes over is a slow consumer: it gets a
NOTICE saying so and is closed, as strfry does. Query results are exempt from that check
but are paced instead: while the backlog is above a quarter of the budget `output_full`
is set and the querier runs no further query for this connection until it drains.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pylon.nostr.messages import notice_frame
from pylon.relay.framing import can_frame_now, write_framed

from nexus_relay.ratelog import RateLimitedLog
from nexus_relay.subindex import Subscription

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)

FRAME_OVERHEAD = 64  # bytes a queued str costs beyond its characters (object header, deque slot)


def _encode(frame: str) -> bytes:
    try:
        return frame.encode()
    except UnicodeEncodeError:  # a lone surrogate: never put invalid UTF-8 on the wire
        return frame.encode("utf-8", "replace")


class TokenBucket:
    """Classic token bucket; rate <= 0 means unlimited."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class SecondsBucket:
    """A budget of query seconds per connection: refills at `rate` per second up to `burst`;
    queries are charged what they took afterwards, so the balance may go negative (debt)."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self) -> bool:
        if self.rate <= 0:
            return True
        self._refill()
        return self.tokens > 0

    def charge(self, seconds: float) -> None:
        self._refill()
        self.tokens -= seconds


class Connection:
    __slots__ = (
        "ws", "subs", "challenge", "authed", "events_bucket", "reqs_bucket", "query_bucket", "closed",
        "_backlog", "_drainer", "_max_bytes", "_high_water", "host", "backlog_bytes", "held_bytes",
        "output_full", "on_drained", "on_slow", "sub_values", "pending_queries", "_flush_due", "__weakref__",
    )

    def __init__(self, ws: ServerConnection, *, events_rate: float, events_burst: int,
                 reqs_rate: float, reqs_burst: int, max_bytes: int,
                 query_rate: float = 0.0, query_burst: float = 1.0) -> None:
        self.ws = ws
        self.subs: dict[str, Subscription] = {}
        self.challenge = secrets.token_hex(16)
        self.authed: set[str] = set()
        self.events_bucket = TokenBucket(events_rate, events_burst)
        self.reqs_bucket = TokenBucket(reqs_rate, reqs_burst)
        self.query_bucket = SecondsBucket(query_rate, query_burst)
        self.closed = False
        self._backlog: deque[str] | None = None
        self._drainer: asyncio.Task | None = None
        self._max_bytes = max_bytes
        self._high_water = max(max_bytes // 4, 1)
        self.backlog_bytes = 0  # frames waiting in the backlog (with FRAME_OVERHEAD each)
        self.held_bytes = 0  # live events held until a subscription's stored events are sent
        self.output_full = False  # read by the querier thread: pause queries for this connection
        self.on_drained: "Callable[[Connection], None] | None" = None
        self.on_slow: "Callable[[], None] | None" = None  # stats hook: a slow consumer was closed
        self.sub_values = 0  # filter values over all live subscriptions
        self.pending_queries = 0  # REQ/COUNT submitted to the querier, not answered yet
        self._flush_due = False  # frames framed this loop turn, written together at its end
        try:
            self.host = ws.request.headers.get("Host", "") if ws.request is not None else ""
        except Exception:  # pragma: no cover - defensive
            self.host = ""

    def over_budget(self, extra: int = 0) -> bool:
        return self.backlog_bytes + self.held_bytes + extra > self._max_bytes

    def slow_consumer(self, what: str) -> None:
        """Tell the client why (best effort: it is not reading) and close the connection."""
        if self.closed:
            return
        queued = self.backlog_bytes + self.held_bytes
        _rlog.warn("slow", "closing a slow consumer: %d bytes queued (%s), budget %d", queued, what, self._max_bytes)
        self.closed = True
        if self.on_slow is not None:
            self.on_slow()
        if self._backlog is not None:
            self._backlog.clear()
        self.backlog_bytes = self.held_bytes = 0
        if self._drainer is not None:
            self._drainer.cancel()
        ws = self.ws
        notice = notice_frame(f"error: slow consumer: over {self._max_bytes} bytes waiting to be sent; closing")
        try:
            if ws.protocol.state is State.OPEN:
                ws.protocol.send_text(notice.encode())
                ws.send_data()
        except Exception:  # transport already gone
            pass
        asyncio.get_running_loop().create_task(ws.close(1008, "slow consumer"))

    def send(self, frame: str, live: bool = True) -> None:
        """Queue one text frame for the client, in order, without awaiting.

        `live` frames (fan-out, answers) enforce the byte budget; stored events of a query
        (`live=False`) are paced by the querier instead (see `output_full`)."""
        if self.closed:
            return
        ws = self.ws
        if self._backlog is None:
            if can_frame_now(ws):
                try:
                    ws.protocol.send_text(_encode(frame))
                except Exception:  # transport gone: the reader loop will see the close
                    self.closed = True
                    return
                if not self._flush_due:
                    self._flush_due = True
                    asyncio.get_running_loop().call_soon(self._flush)
                return
            self._backlog = deque()
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        cost = len(frame) + FRAME_OVERHEAD
        if live and self.over_budget(cost):
            self.slow_consumer("outbox")
            return
        self._backlog.append(frame)
        self.backlog_bytes += cost
        if self.backlog_bytes > self._high_water:
            self.output_full = True

    def _flush(self) -> None:
        """Write the frames framed during this loop turn together (pylon.relay.framing)."""
        self._flush_due = False
        if not write_framed(self.ws):
            self.closed = True

    async def _drain(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            low_water = self._high_water // 2
            while backlog:
                await self.ws.send(_encode(backlog[0]), text=True)
                if backlog:
                    self.backlog_bytes -= len(backlog.popleft()) + FRAME_OVERHEAD
                    if self.output_full and self.backlog_bytes < low_water:
                        self._set_drained()
        except ConnectionClosed:
            self.closed = True
        except Exception:  # pragma: no cover - defensive
            log.exception("sending to a client failed")
            self.closed = True
        finally:
            self._backlog = None
            self._drainer = None
            self.backlog_bytes = 0
            if self.output_full:
                self._set_drained()

    def _set_drained(self) -> None:
        self.output_full = False
        if self.on_drained is not None and not self.closed:
            self.on_drained(self)

    def cancel(self) -> None:
        self.closed = True
        if self._drainer is not None:
            self._drainer.cancel()
