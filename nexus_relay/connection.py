"""Per-connection state: subscriptions, NIP-42 identity, rate limits, and outgoing frames.

Sending: most frames go straight to the transport without a coroutine per message (the
relay answers thousands of OKs and EVENTs per second and `await ws.send()` per frame is
a large share of that cost). When the socket is back-pressured, frames queue in a backlog
drained by one task with websockets' own `send()`, preserving order; a reader slower than
`max_outbox` frames is disconnected rather than allowed to grow memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from nexus_relay.subindex import Subscription

log = logging.getLogger(__name__)


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


class Connection:
    __slots__ = (
        "ws", "subs", "challenge", "authed", "events_bucket", "reqs_bucket", "closed",
        "_backlog", "_drainer", "_max_outbox", "host",
    )

    def __init__(self, ws: ServerConnection, *, events_rate: float, events_burst: int,
                 reqs_rate: float, reqs_burst: int, max_outbox: int) -> None:
        self.ws = ws
        self.subs: dict[str, Subscription] = {}
        self.challenge = secrets.token_hex(16)
        self.authed: set[str] = set()
        self.events_bucket = TokenBucket(events_rate, events_burst)
        self.reqs_bucket = TokenBucket(reqs_rate, reqs_burst)
        self.closed = False
        self._backlog: deque[str] | None = None
        self._drainer: asyncio.Task | None = None
        self._max_outbox = max_outbox
        try:
            self.host = ws.request.headers.get("Host", "") if ws.request is not None else ""
        except Exception:  # pragma: no cover - defensive
            self.host = ""

    def send(self, frame: str) -> None:
        """Queue one text frame for the client, in order, without awaiting."""
        if self.closed:
            return
        ws = self.ws
        if self._backlog is None:
            if ws.protocol.state is State.OPEN and not ws.paused and ws.send_in_progress is None:
                try:
                    ws.protocol.send_text(_encode(frame))
                    ws.send_data()
                except Exception:  # transport gone: the reader loop will see the close
                    self.closed = True
                return
            self._backlog = deque()
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        if len(self._backlog) >= self._max_outbox:
            log.warning("closing a connection that does not read its messages (%d queued)", len(self._backlog))
            self.closed = True
            self._backlog.clear()
            asyncio.get_running_loop().create_task(ws.close(1008, "slow consumer"))
            return
        self._backlog.append(frame)

    async def _drain(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            while backlog:
                await self.ws.send(_encode(backlog[0]), text=True)
                if backlog:
                    backlog.popleft()
        except ConnectionClosed:
            self.closed = True
        except Exception:  # pragma: no cover - defensive
            log.exception("sending to a client failed")
            self.closed = True
        finally:
            self._backlog = None
            self._drainer = None

    def cancel(self) -> None:
        self.closed = True
        if self._drainer is not None:
            self._drainer.cancel()
