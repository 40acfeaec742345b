"""An asyncio pool over several Nostr relays: publish with OK, subscriptions, reconnects, AUTH.

Design (why it looks like this):

* One websocket per relay carries every subscription. Each relay has one runner task that
  connects, resubscribes, reads frames and dispatches them to subscription queues: no task
  per event, no task per subscription.
* Incoming events are deduplicated by id (per subscription, across relays) *before* the
  signature is checked, so N relays sending the same event cost one verification. An id is
  only marked seen after it verified, so a forged copy cannot shadow the real one. Every
  delivered event has a valid id and signature and matches its subscription's filters.
* Reconnects back off exponentially with jitter. On reconnect every open subscription is
  re-sent with `since` = the newest created_at it has seen (inclusive, then deduped), so
  events published while we were away are not missed.
* publish() waits for each relay's OK (or a timeout) and reports a typed reply per relay
  with the machine-readable prefix. A relay that is down fails at once ("disconnected").
* NIP-42: a relay's AUTH challenge is answered with a signed kind 22242 when the pool has
  keys; an `auth-required:` OK or CLOSED triggers authentication and one resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pylon.errors import RelayError
from pylon.nostr.errors import InvalidEvent, InvalidMessage
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.nostr.messages import (
    ClientAuth,
    ClientClose,
    ClientCount,
    ClientEvent,
    ClientReq,
    RelayAuth,
    RelayClosed,
    RelayCount,
    RelayEose,
    RelayEvent,
    RelayNotice,
    RelayOk,
    parse_relay_message,
    split_prefix,
)

log = logging.getLogger("pylon.relay.pool")

__all__ = [
    "RelayPool", "Subscription", "RelayReply", "PublishResult", "PublishError",
    "SubscriptionClosed", "fetch_nip11",
]

KIND_CLIENT_AUTH = 22242
_BACKOFF_BASE = 0.25          # first reconnect delay (seconds, before jitter)
_MAX_FRAME = 4 * 1024 * 1024  # largest frame we accept from a relay
_SEEN_PER_SUB = 200_000       # ids remembered per subscription for dedupe
_VERIFIED_CACHE = 50_000      # (id -> sig) already verified, shared by subscriptions


# ------------------------------------------------------------------------ results
@dataclass(frozen=True, slots=True)
class RelayReply:
    """One relay's answer to a publish. prefix: the relay's machine-readable prefix
    ("duplicate", "blocked", "auth-required", …) or, for local failures, "timeout" /
    "disconnected"; "" when the relay gave none."""

    accepted: bool
    prefix: str
    message: str

    def describe(self) -> str:
        return ("accepted" if self.accepted else "rejected") + (f" ({self.message})" if self.message else "")


@dataclass(slots=True)
class PublishResult:
    event_id: str
    results: dict[str, RelayReply] = field(default_factory=dict)

    @property
    def accepted_by(self) -> list[str]:
        return [url for url, reply in self.results.items() if reply.accepted]

    @property
    def failed(self) -> dict[str, RelayReply]:
        return {url: reply for url, reply in self.results.items() if not reply.accepted}

    def summary(self) -> str:
        return "; ".join(f"{url}: {reply.describe()}" for url, reply in self.results.items())


class PublishError(RelayError):
    """Fewer relays than required accepted an event; `.result` has every relay's reply."""

    def __init__(self, message: str, result: PublishResult):
        super().__init__(message)
        self.result = result


class SubscriptionClosed(RelayError):
    """Every relay serving a subscription closed it; `.reasons` maps url -> CLOSED message."""

    def __init__(self, message: str, reasons: dict[str, str]):
        super().__init__(message)
        self.reasons = reasons


# ----------------------------------------------------------------------- helpers
def _normalize_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise RelayError(f"relay URL must start with ws:// or wss:// and name a host: {url!r}")
    path = parts.path if parts.path not in ("", "/") else ""
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, parts.query, ""))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


class _BoundedSet:
    """An insertion-ordered set that forgets its oldest members past `limit`."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int):
        self._items: dict[str, None] = {}
        self._limit = limit

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        if len(self._items) > self._limit:
            del self._items[next(iter(self._items))]

    def __len__(self) -> int:
        return len(self._items)


_END = object()  # queue sentinel: the subscription is over


# -------------------------------------------------------------------- subscription
class Subscription:
    """Verified, deduplicated, filter-matching events from every relay of the pool.

    Use as `async with pool.subscribe([...]) as sub: async for event in sub: ...`.
    Iteration ends (StopAsyncIteration) when the subscription is closed locally, and raises
    SubscriptionClosed when the relays closed it (e.g. `auth-required:` without keys).
    """

    def __init__(self, pool: "RelayPool", filters: Sequence[Filter], sub_id: str | None = None):
        if not filters:
            raise ValueError("a subscription needs at least one filter")
        self.pool = pool
        self.sub_id = sub_id or secrets.token_hex(8)
        self.filters: list[Filter] = list(filters)
        self.closed_by: dict[str, str] = {}        # url -> CLOSED message
        self.last_seen: int | None = None          # newest created_at delivered
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._seen = _BoundedSet(_SEEN_PER_SUB)
        self._served_by: set[str] = set()          # relays that ever got our REQ
        self._eose_pending: set[str] = set()
        self._eose_done = asyncio.Event()
        self._eose_done.set()
        self._auth_retried: set[str] = set()
        self._opened = False
        self._closed = False
        self._error: SubscriptionClosed | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> "Subscription":
        if self._opened:
            return self
        await self.pool._ensure_started()
        self._opened = True
        self.pool._register(self)
        for relay in self.pool._relays.values():
            if relay.state == "connected":
                await relay.send_req(self)
        return self

    async def __aenter__(self) -> "Subscription":
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Send CLOSE to every relay and end iteration."""
        if self._closed:
            return
        self._closed = True
        self.pool._unregister(self)
        for relay in self.pool._relays.values():
            await relay.send_close(self.sub_id)
        self._queue.put_nowait(_END)
        self._eose_done.set()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- consuming ---------------------------------------------------------------------
    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        if not self._opened:
            await self.open()
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # keep ending for later callers
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return item

    async def next(self, timeout: float | None = None) -> Event:
        """The next event; asyncio.TimeoutError after `timeout` seconds, StopAsyncIteration
        if closed locally, SubscriptionClosed if the relays closed it."""
        if timeout is None:
            return await self.__anext__()
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def wait_eose(self, timeout: float = 5.0) -> None:
        """Wait until every connected relay that got our REQ has sent EOSE (or closed it)."""
        if not self._opened:
            await self.open()
        await asyncio.wait_for(self._eose_done.wait(), timeout)

    def pending_events(self) -> int:
        return self._queue.qsize()

    # -- called by the relay readers ----------------------------------------------------
    def _filters_for(self, url: str) -> list[Filter]:
        """Original filters for a relay's first REQ; on a resubscribe, `since` = last seen
        (inclusive) and no limit, so everything published while we were away comes back."""
        if url not in self._served_by or self.last_seen is None:
            return self.filters
        out = []
        for flt in self.filters:
            copy = flt.with_since(self.last_seen)
            copy.limit = None
            out.append(copy)
        return out

    def _req_sent(self, url: str) -> None:
        self._served_by.add(url)
        self._eose_pending.add(url)
        self._eose_done.clear()

    def _relay_gone(self, url: str) -> None:
        self._eose_pending.discard(url)
        if not self._eose_pending:
            self._eose_done.set()

    def _on_eose(self, url: str) -> None:
        self._relay_gone(url)

    def _deliver(self, event: Event) -> None:
        self._seen.add(event.id)
        if self.last_seen is None or event.created_at > self.last_seen:
            self.last_seen = event.created_at
        self._queue.put_nowait(event)

    def _on_closed(self, url: str, message: str) -> None:
        self.closed_by[url] = message
        self._relay_gone(url)
        serving = [
            r for r in self.pool._relays.values()
            if r.state == "connected" and r.url not in self.closed_by
        ]
        if not serving and not self._closed:
            reasons = "; ".join(f"{u}: {m or 'closed'}" for u, m in self.closed_by.items())
            self._error = SubscriptionClosed(f"subscription {self.sub_id} closed by relays: {reasons}",
                                             dict(self.closed_by))
            self._closed = True
            self.pool._unregister(self)
            self._queue.put_nowait(_END)
            self._eose_done.set()


# --------------------------------------------------------------------------- relay
class _Relay:
    """One relay connection: a runner task (connect, resubscribe, read, back off)."""

    def __init__(self, pool: "RelayPool", url: str):
        self.pool = pool
        self.url = url
        self.state = "disconnected"
        self.last_error = "not connected yet"
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task | None = None
        self.first_attempt = asyncio.Event()
        self.connected = asyncio.Event()
        self.failures = 0
        self.connections = 0                      # successful connections so far
        self._reqs: set[str] = set()              # sub ids sent on this connection
        self._ok_waiters: dict[str, list[asyncio.Future]] = {}
        self._count_waiters: dict[str, asyncio.Future] = {}
        self._challenge: str | None = None
        self._challenge_seen = asyncio.Event()
        self._auth_future: asyncio.Future | None = None
        self._auth_waiting_subs: set[str] = set()

    # -- runner ------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self.state = "connecting"
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self.pool.connect_timeout,
                    max_size=_MAX_FRAME,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    proxy=None if _is_loopback(self.url) else True,
                )
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ValueError) as exc:
                self.state = "disconnected"
                self.last_error = f"connect failed: {exc.__class__.__name__}: {exc}".rstrip(": ")
                self.first_attempt.set()
                self.failures += 1
                await asyncio.sleep(self._backoff())
                continue
            self.ws = ws
            self._reset_connection_state()
            self.state = "connected"
            self.failures = 0
            self.connections += 1
            self.connected.set()
            self.first_attempt.set()
            log.info("relay connected: %s", self.url)
            try:
                for sub in list(self.pool._subs.values()):
                    await self.send_req(sub)
                async for frame in ws:
                    try:
                        self._handle(frame)
                    except Exception:  # one bad frame must never end the connection
                        self.pool.stats["malformed"] += 1
                        log.exception("error handling a frame from %s", self.url)
                self.last_error = f"connection closed by relay ({ws.close_code})"
            except ConnectionClosed as exc:
                self.last_error = f"connection lost: {exc}"
            finally:
                self.state = "disconnected"
                self.connected.clear()
                self.ws = None
                self._connection_lost()
                # close_timeout bounds this; shield it from our own cancellation's side effects
                with contextlib.suppress(Exception):
                    await ws.close()
            log.info("relay disconnected: %s (%s)", self.url, self.last_error)
            self.failures += 1
            await asyncio.sleep(self._backoff())

    def _backoff(self) -> float:
        delay = min(self.pool.max_backoff, _BACKOFF_BASE * (2 ** max(0, self.failures - 1)))
        return random.uniform(delay / 2, delay)

    def _reset_connection_state(self) -> None:
        self._reqs.clear()
        self._challenge = None
        self._challenge_seen = asyncio.Event()
        self._auth_future = None
        self._auth_waiting_subs.clear()

    def _connection_lost(self) -> None:
        reply = RelayReply(False, "disconnected", f"connection lost before OK: {self.last_error}")
        for waiters in self._ok_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(reply)
        self._ok_waiters.clear()
        for fut in self._count_waiters.values():
            if not fut.done():
                fut.set_exception(RelayError(f"{self.url}: connection lost"))
        self._count_waiters.clear()
        if self._auth_future is not None and not self._auth_future.done():
            self._auth_future.set_result(False)
        for sub in list(self.pool._subs.values()):
            sub._relay_gone(self.url)

    # -- sending ---------------------------------------------------------------------------
    async def _send(self, text: str) -> bool:
        ws = self.ws
        if ws is None or self.state != "connected":
            return False
        try:
            await ws.send(text)
            return True
        except ConnectionClosed:
            return False

    async def send_req(self, sub: Subscription) -> None:
        if sub.sub_id in self._reqs or sub.closed or self.url in sub.closed_by:
            return
        self._reqs.add(sub.sub_id)
        filters = sub._filters_for(self.url)
        sub._req_sent(self.url)
        if not await self._send(ClientReq(sub.sub_id, filters).to_json()):
            sub._relay_gone(self.url)

    async def send_close(self, sub_id: str) -> None:
        if sub_id in self._reqs:
            self._reqs.discard(sub_id)
            await self._send(ClientClose(sub_id).to_json())

    async def publish(self, event: Event, frame: str, timeout: float) -> RelayReply:
        if self.state != "connected" and not self.first_attempt.is_set():
            # The very first connection is still being made: give it its chance.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.first_attempt.wait(), min(timeout, self.pool.connect_timeout))
        if self.state != "connected":
            return RelayReply(False, "disconnected", f"relay is not connected ({self.last_error})")
        reply = await self._send_and_wait(event.id, frame, timeout)
        if reply.prefix == "auth-required" and self.pool.keys is not None:
            if await self.authenticate(timeout):
                reply = await self._send_and_wait(event.id, frame, timeout)
            else:
                reply = RelayReply(False, "auth-required", f"{reply.message} (authentication failed)")
        return reply

    async def _send_and_wait(self, event_id: str, frame: str, timeout: float) -> RelayReply:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ok_waiters.setdefault(event_id, []).append(fut)
        try:
            if not await self._send(frame):
                return RelayReply(False, "disconnected", f"relay is not connected ({self.last_error})")
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return RelayReply(False, "timeout", f"no OK from relay within {timeout:g}s")
        finally:
            waiters = self._ok_waiters.get(event_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
                if not waiters:
                    del self._ok_waiters[event_id]

    async def count(self, filters: Sequence[Filter], timeout: float) -> int:
        if self.state != "connected":
            raise RelayError(f"{self.url}: not connected")
        sub_id = "count-" + secrets.token_hex(6)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._count_waiters[sub_id] = fut
        try:
            if not await self._send(ClientCount(sub_id, list(filters)).to_json()):
                raise RelayError(f"{self.url}: not connected")
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._count_waiters.pop(sub_id, None)

    # -- NIP-42 ----------------------------------------------------------------------------
    def _start_auth(self) -> None:
        """Send AUTH for the current challenge (once per challenge); needs keys."""
        keys = self.pool.keys
        if keys is None or self._challenge is None:
            return
        if self._auth_future is not None and not self._auth_future.done():
            return
        auth = Event.build(keys, KIND_CLIENT_AUTH, "", [["relay", self.url], ["challenge", self._challenge]])
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._auth_future = fut
        ok: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ok_waiters.setdefault(auth.id, []).append(ok)

        def _done(ok_fut: asyncio.Future) -> None:
            reply: RelayReply = ok_fut.result()
            if not fut.done():
                fut.set_result(reply.accepted)
            if not reply.accepted:
                log.warning("relay %s refused our AUTH: %s", self.url, reply.message)

        ok.add_done_callback(_done)
        fut.add_done_callback(self._after_auth)
        ws = self.ws
        if ws is not None:
            # Sent without awaiting the OK: the reader resolves `ok` when it arrives.
            self.pool._spawn(self._send(ClientAuth(auth).to_json()))

    def _after_auth(self, fut: asyncio.Future) -> None:
        accepted = bool(fut.result()) if not fut.cancelled() else False
        waiting = list(self._auth_waiting_subs)
        self._auth_waiting_subs.clear()
        for sub_id in waiting:
            sub = self.pool._subs.get(sub_id)
            if sub is None:
                continue
            if accepted and self.state == "connected":
                self._reqs.discard(sub_id)
                sub.closed_by.pop(self.url, None)
                self.pool._spawn(self.send_req(sub))
            else:
                sub._on_closed(self.url, "auth-required: authentication failed")

    async def authenticate(self, timeout: float) -> bool:
        """Make sure this connection is authenticated (wait for a challenge if needed)."""
        if self.pool.keys is None:
            return False
        if self._auth_future is not None and self._auth_future.done() and self._auth_future.result():
            return True
        deadline = time.monotonic() + timeout
        try:
            if self._challenge is None:
                await asyncio.wait_for(self._challenge_seen.wait(), timeout)
            if self._auth_future is None or (self._auth_future.done() and not self._auth_future.result()):
                self._auth_future = None
                self._start_auth()
            if self._auth_future is None:
                return False
            return bool(await asyncio.wait_for(asyncio.shield(self._auth_future),
                                               max(0.0, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            return False

    # -- reading ---------------------------------------------------------------------------
    def _handle(self, frame: str | bytes) -> None:
        try:
            msg = parse_relay_message(frame)
        except InvalidMessage as exc:
            self.pool.stats["malformed"] += 1
            log.debug("relay %s sent a malformed frame: %s", self.url, exc)
            return
        if isinstance(msg, RelayEvent):
            self.pool._on_event(self.url, msg.sub_id, msg.event)
        elif isinstance(msg, RelayOk):
            waiters = self._ok_waiters.pop(msg.event_id, None)
            if waiters:
                reply = RelayReply(msg.accepted, msg.prefix, msg.message)
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(reply)
        elif isinstance(msg, RelayEose):
            sub = self.pool._subs.get(msg.sub_id)
            if sub is not None:
                sub._on_eose(self.url)
        elif isinstance(msg, RelayClosed):
            self._on_closed(msg)
        elif isinstance(msg, RelayAuth):
            self._challenge = msg.challenge
            self._challenge_seen.set()
            if self._auth_future is not None and self._auth_future.done():
                self._auth_future = None  # a new challenge: authenticate again
            self._start_auth()
        elif isinstance(msg, RelayCount):
            count_fut = self._count_waiters.get(msg.sub_id)
            if count_fut is not None and not count_fut.done():
                count_fut.set_result(msg.count)
        elif isinstance(msg, RelayNotice):
            log.info("NOTICE from %s: %s", self.url, msg.message[:300])

    def _on_closed(self, msg: RelayClosed) -> None:
        self._reqs.discard(msg.sub_id)
        fut = self._count_waiters.get(msg.sub_id)
        if fut is not None and not fut.done():
            fut.set_exception(RelayError(f"{self.url} refused COUNT: {msg.message or 'closed'}"))
            return
        sub = self.pool._subs.get(msg.sub_id)
        if sub is None:
            return
        prefix, _ = split_prefix(msg.message)
        if prefix == "auth-required" and self.pool.keys is not None and self.url not in sub._auth_retried:
            sub._auth_retried.add(self.url)
            # EOSE stays pending for this relay: the REQ is resent once we are authenticated.
            self._auth_waiting_subs.add(sub.sub_id)
            if self._auth_future is not None and self._auth_future.done():
                if self._auth_future.result():
                    # Already authenticated on this connection: resend at once.
                    self._after_auth(self._auth_future)
                    return
                self._auth_future = None
            self._start_auth()  # no-op until the challenge arrives; then the reader starts it
            return
        log.info("relay %s closed subscription %s: %s", self.url, msg.sub_id, msg.message)
        sub._on_closed(self.url, msg.message)


# ---------------------------------------------------------------------------- pool
class RelayPool:
    """Several relays behind one API. Start with `async with RelayPool(urls) as pool:`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        keys: Keys | None = None,
        ok_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        max_backoff: float = 30.0,
    ) -> None:
        normalized: list[str] = []
        for url in urls:
            url = _normalize_url(url)
            if url not in normalized:
                normalized.append(url)
        if not normalized:
            raise RelayError("no relays given")
        self.keys = keys
        self.ok_timeout = ok_timeout
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self._relays: dict[str, _Relay] = {url: _Relay(self, url) for url in normalized}
        self._subs: dict[str, Subscription] = {}
        self._verified: OrderedDict[str, str] = OrderedDict()
        self._background: set[asyncio.Task] = set()
        self._started = False
        self._closed = False
        self.stats: dict[str, int] = {
            "events": 0, "duplicates": 0, "invalid": 0, "unmatched": 0, "unknown_sub": 0, "malformed": 0,
        }

    @property
    def urls(self) -> list[str]:
        return list(self._relays)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start one runner per relay (connections are made in the background)."""
        if self._started:
            return
        if self._closed:
            raise RelayError("relay pool is closed")
        self._started = True
        for relay in self._relays.values():
            relay.task = asyncio.create_task(relay.run(), name=f"relay:{relay.url}")

    async def _ensure_started(self) -> None:
        """Start if needed and give every relay its first connection attempt (bounded by
        connect_timeout), so a fresh pool's first REQ or EVENT is not lost to a race."""
        await self.start()
        pending = [r.first_attempt.wait() for r in self._relays.values() if not r.first_attempt.is_set()]
        if pending:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), self.connect_timeout + 0.5)

    async def __aenter__(self) -> "RelayPool":
        await self._ensure_started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close subscriptions (CLOSE sent), connections and runner tasks; idempotent."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.close(), 2.0)
        tasks = [r.task for r in self._relays.values() if r.task is not None]
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        for relay in self._relays.values():
            if relay.ws is not None:
                with contextlib.suppress(Exception):
                    await relay.ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        for relay in self._relays.values():
            relay.state = "disconnected"
            relay.task = None

    def _spawn(self, coro: Any) -> None:
        """Background work tied to the pool's lifetime (rare: AUTH sends, auth resends)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- state ---------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        return {url: relay.state for url, relay in self._relays.items()}

    def last_errors(self) -> dict[str, str]:
        return {url: relay.last_error for url, relay in self._relays.items() if relay.state != "connected"}

    def connected_count(self) -> int:
        return sum(1 for r in self._relays.values() if r.state == "connected")

    async def wait_connected(self, timeout: float = 5.0, min_relays: int = 1, *, fail_fast: bool = False) -> int:
        """Wait until `min_relays` are connected (or timeout); the number connected.
        Raises RelayError if none is. With `fail_fast`, at once when no relay has ever
        connected and each has failed its first attempt (a refused connection is then
        reported in milliseconds, not after `timeout`); without it a relay that is still
        starting gets the whole `timeout`."""
        await self.start()
        min_relays = max(1, min(min_relays, len(self._relays)))
        deadline = time.monotonic() + timeout
        while self.connected_count() < min_relays:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (fail_fast and self._all_failed_first()):
                break
            waits = [asyncio.ensure_future(r.connected.wait()) for r in self._relays.values()
                     if r.state != "connected"]
            waits += [asyncio.ensure_future(r.first_attempt.wait()) for r in self._relays.values()
                      if not r.first_attempt.is_set()]
            if not waits:
                break
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        count = self.connected_count()
        if count == 0:
            reasons = "; ".join(f"{u}: {e}" for u, e in self.last_errors().items())
            raise RelayError(f"could not connect to any relay ({reasons})" if fail_fast and self._all_failed_first()
                             else f"no relay connected within {timeout:g}s ({reasons})")
        return count

    def _all_failed_first(self) -> bool:
        """True when no relay has ever connected and each has failed its first attempt."""
        return all(r.first_attempt.is_set() and r.connections == 0 and r.failures > 0
                   for r in self._relays.values())

    # -- publishing ----------------------------------------------------------------------
    async def publish(self, event: Event, *, timeout: float | None = None, min_accepted: int = 1) -> PublishResult:
        """Send `event` to every relay and wait for each OK (or `timeout`).

        Raises PublishError (a RelayError) listing every relay's reason when fewer than
        `min_accepted` relays accepted it.
        """
        await self.start()
        timeout = self.ok_timeout if timeout is None else timeout
        frame = ClientEvent(event).to_json()
        relays = list(self._relays.values())
        replies = await asyncio.gather(*(r.publish(event, frame, timeout) for r in relays))
        result = PublishResult(event.id, {r.url: reply for r, reply in zip(relays, replies)})
        if len(result.accepted_by) < min_accepted:
            raise PublishError(
                f"event {event.id[:12]}… accepted by {len(result.accepted_by)} of {len(relays)} relays "
                f"(needed {min_accepted}): {result.summary()}",
                result,
            )
        return result

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, filters: Sequence[Filter], *, sub_id: str | None = None) -> Subscription:
        """A subscription; REQ is sent when it is entered (or first iterated)."""
        if sub_id is not None and sub_id in self._subs:
            raise RelayError(f"subscription id {sub_id!r} is already open")
        return Subscription(self, filters, sub_id)

    def _register(self, sub: Subscription) -> None:
        if self._closed:
            raise RelayError("relay pool is closed")
        self._subs[sub.sub_id] = sub

    def _unregister(self, sub: Subscription) -> None:
        if self._subs.get(sub.sub_id) is sub:
            del self._subs[sub.sub_id]

    async def query(self, filters: Sequence[Filter], *, timeout: float = 5.0) -> list[Event]:
        """Stored events until EOSE from every connected relay (or timeout): deduped, newest first."""
        await self._ensure_started()
        sub = self.subscribe(filters)
        async with sub:
            with contextlib.suppress(asyncio.TimeoutError):
                await sub.wait_eose(timeout)
            events: list[Event] = []
            while True:
                try:
                    item = sub._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is _END:
                    break
                events.append(item)
        events.sort(key=lambda e: (-e.created_at, e.id))
        return events

    async def count(self, filters: Sequence[Filter], *, timeout: float = 5.0) -> dict[str, int]:
        """NIP-45 COUNT from every connected relay that answers (url -> count)."""
        await self._ensure_started()
        relays = [r for r in self._relays.values() if r.state == "connected"]
        answers = await asyncio.gather(*(r.count(filters, timeout) for r in relays), return_exceptions=True)
        out: dict[str, int] = {}
        for relay, answer in zip(relays, answers):
            if isinstance(answer, int):
                out[relay.url] = answer
            else:
                log.info("COUNT failed on %s: %s", relay.url, str(answer) or answer.__class__.__name__)
        return out

    # -- incoming events (called by readers) -----------------------------------------------
    def _on_event(self, url: str, sub_id: str, event: Event) -> None:
        sub = self._subs.get(sub_id)
        if sub is None:
            self.stats["unknown_sub"] += 1
            return
        if event.id in sub._seen:               # dedupe BEFORE verifying
            self.stats["duplicates"] += 1
            return
        if not self._verify(event):
            self.stats["invalid"] += 1
            log.warning("dropped event %s from %s: invalid id or signature", event.id[:16], url)
            return
        if not any(f.matches(event) for f in sub.filters):
            self.stats["unmatched"] += 1
            log.warning("dropped event %s from %s: does not match subscription %s", event.id[:16], url, sub_id)
            return
        self.stats["events"] += 1
        sub._deliver(event)

    def _verify(self, event: Event) -> bool:
        known_sig = self._verified.get(event.id)
        if known_sig is not None and known_sig == event.sig and event.id_matches():
            return True
        try:
            event.verify()
        except InvalidEvent:
            return False
        self._verified[event.id] = event.sig
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return True


# ---------------------------------------------------------------------------- NIP-11
def _http_url(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise RelayError(f"not a relay URL: {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


async def fetch_nip11(url: str, *, timeout: float = 5.0) -> dict:
    """The relay's NIP-11 information document (GET with Accept: application/nostr+json)."""
    http_url = _http_url(url)
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=not _is_loopback(url)) as client:
            resp = await client.get(http_url, headers={"Accept": "application/nostr+json"})
    except httpx.HTTPError as exc:
        raise RelayError(f"NIP-11 fetch from {http_url} failed: {exc.__class__.__name__}: {exc}") from None
    if resp.status_code != 200:
        raise RelayError(f"NIP-11 fetch from {http_url} returned HTTP {resp.status_code}")
    try:
        doc = resp.json()
    except ValueError:
        raise RelayError(f"NIP-11 document from {http_url} is not JSON") from None
    if not isinstance(doc, dict):
        raise RelayError(f"NIP-11 document from {http_url} is not a JSON object")
    return doc
