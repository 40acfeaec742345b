"""An asyncio pool over several Nostr relays: publish with OK, subscriptions, reconnects, AUTH.

Three layers, websockets-style (each only talks to the one below through its interface):

* pylon.relay.session — the protocol without I/O: `RelaySession` (one relay link: REQ/CLOSE,
  OK, EOSE, CLOSED, AUTH, COUNT; frames in -> events, frames out) and `SubscriptionState`
  (one subscription across relays: EOSE bookkeeping, dedupe, the resubscribe `since`).
* pylon.relay.runner — `RelayRunner`, one task per relay: connect, back off, read frames into
  the session, send what it says, resolve the futures callers wait on.
* this module — `RelayPool` and `Subscription`, the public API, unchanged: the runners reach
  the pool only through the `RunnerHost` methods it implements.

Design (why it looks like this):

* One websocket per relay carries every subscription: no task per event, no task per
  subscription.
* Incoming events are deduplicated by id (per subscription, across relays) *before* the
  signature is checked, so N relays sending the same event cost one verification. An id is
  only marked seen after it verified, so a forged copy cannot shadow the real one. Every
  delivered event has a valid id and signature and matches its subscription's filters.
* Reconnects back off exponentially with jitter. On reconnect every open subscription is
  re-sent with `since` = the newest created_at it has seen (inclusive, then deduped), so
  events published while we were away are not missed
  (`SubscriptionState.resubscribe_since`, the one place that computes it).
* publish() waits for each relay's OK (or a timeout) and reports a typed reply per relay
  with the machine-readable prefix. A relay that is down fails at once ("disconnected").
* NIP-42: a relay's AUTH challenge is answered with a signed kind 22242 when the pool has
  keys; an `auth-required:` OK or CLOSED triggers authentication and one resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Coroutine, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from pylon.errors import RelayError
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.nostr.messages import ClientEvent
from pylon.relay.runner import RelayRunner, is_loopback
from pylon.relay.session import Admit, RelayReply, SubscriptionClosed, SubscriptionState, Verifier

log = logging.getLogger("pylon.relay.pool")

__all__ = [
    "RelayPool", "Subscription", "RelayReply", "PublishResult", "PublishError",
    "SubscriptionClosed", "fetch_nip11",
]


# ------------------------------------------------------------------------ results
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
    """Fewer relays than required accepted an event; `.result` has every relay's reply.

    `too_large`: every relay that said no refused the event's size (`invalid: event too
    large`, NIP-01 has no prefix of its own for it): sending it again cannot help, and the
    hint says so (the gateway answers 413)."""

    def __init__(self, message: str, result: PublishResult):
        refusals = [reply.message.lower() for reply in result.failed.values()
                    if reply.prefix not in ("timeout", "disconnected")]
        self.too_large = bool(refusals) and all("too large" in m or "too big" in m for m in refusals)
        super().__init__(message, hint="the event is larger than these relays take (64 KiB on many): shorten the "
                                       "prompt" if self.too_large else None)
        self.result = result


# ----------------------------------------------------------------------- helpers
def _normalize_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise RelayError(f"relay URL must start with ws:// or wss:// and name a host: {url!r}")
    path = parts.path if parts.path not in ("", "/") else ""
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, parts.query, ""))


_END = object()  # queue sentinel: the subscription is over


# -------------------------------------------------------------------- subscription
class Subscription:
    """Verified, deduplicated, filter-matching events from every relay of the pool.

    Use as `async with pool.subscribe([...]) as sub: async for event in sub: ...`.
    Iteration ends (StopAsyncIteration) when the subscription is closed locally, and raises
    SubscriptionClosed when the relays closed it (e.g. `auth-required:` without keys).
    The protocol state is `self.state` (pylon.relay.session.SubscriptionState); this class
    adds the queue and the EOSE wait.
    """

    def __init__(self, pool: "RelayPool", filters: Sequence[Filter], sub_id: str | None = None):
        self.pool = pool
        self.state = SubscriptionState(sub_id or secrets.token_hex(8), filters)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._eose_done = asyncio.Event()
        self._eose_done.set()
        self._opened = False
        self._ended = False

    @property
    def sub_id(self) -> str:
        return self.state.sub_id

    @property
    def filters(self) -> list[Filter]:
        return self.state.filters

    @property
    def closed_by(self) -> dict[str, str]:
        """url -> CLOSED message of the relays that closed this subscription."""
        return self.state.closed_by

    @property
    def last_seen(self) -> int | None:
        """The newest created_at delivered."""
        return self.state.last_seen

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> "Subscription":
        if self._opened:
            return self
        self._opened = True
        await self.pool.open_subscription(self)
        return self

    async def __aenter__(self) -> "Subscription":
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Send CLOSE to every relay and end iteration."""
        if self.state.closed:
            return
        self.state.closed = True
        await self.pool.close_subscription(self)
        self.end()

    @property
    def closed(self) -> bool:
        return self.state.closed

    # -- consuming ---------------------------------------------------------------------
    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        if not self._opened:
            await self.open()
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # keep ending for later callers
            if self.state.error is not None:
                raise self.state.error
            raise StopAsyncIteration
        return item

    async def next(self, timeout: float | None = None) -> Event:
        """The next event; asyncio.TimeoutError after `timeout` seconds, StopAsyncIteration
        if closed locally, SubscriptionClosed if the relays closed it."""
        if timeout is None:
            return await self.__anext__()
        async with asyncio.timeout(timeout):  # not wait_for: its cancellation races on 3.11 (publish)
            return await self.__anext__()

    async def wait_eose(self, timeout: float = 5.0) -> None:
        """Wait until every connected relay that got our REQ has sent EOSE (or closed it)."""
        if not self._opened:
            await self.open()
        async with asyncio.timeout(timeout):
            await self._eose_done.wait()

    def pending_events(self) -> int:
        return self._queue.qsize()

    def drain(self) -> list[Event]:
        """The events queued now, without waiting (what query() returns)."""
        events: list[Event] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is _END:
                self._queue.put_nowait(_END)
                break
            events.append(item)
        return events

    # -- fed by the pool ---------------------------------------------------------------
    def deliver(self, event: Event) -> None:
        self._queue.put_nowait(event)

    def sync_eose(self) -> None:
        """Follow the protocol state: EOSE wait open while a relay still owes EOSE."""
        if self.state.eose_done or self.state.closed:
            self._eose_done.set()
        else:
            self._eose_done.clear()

    def end(self) -> None:
        """Iteration ends here (after what is queued); EOSE waits return."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_END)
        self._eose_done.set()


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
        self._subs: dict[str, Subscription] = {}
        self._states: dict[str, SubscriptionState] = {}  # the sessions' read-only view of _subs
        self._relays: dict[str, RelayRunner] = {
            url: RelayRunner(url, self, self._states, keys=keys, connect_timeout=connect_timeout,
                             max_backoff=max_backoff)
            for url in normalized
        }
        self._verify = Verifier()
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
            relay.start()

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
        for task in self._background:
            task.cancel()
        for relay in self._relays.values():
            await relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for relay in self._relays.values():
            relay.state = "disconnected"
            relay.task = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Background work tied to the pool's lifetime (rare: AUTH sends, auth resends)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- state ---------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        return {url: relay.state for url, relay in self._relays.items()}

    def last_errors(self) -> dict[str, str]:
        return {url: relay.last_error for url, relay in self._relays.items() if relay.state != "connected"}

    def why_down(self) -> str:
        """`url: last error; …` of the relays that are not connected, for one error line."""
        return "; ".join(f"{url}: {error}" for url, error in self.last_errors().items())

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
            reasons = self.why_down()
            raise RelayError(f"could not connect to any relay ({reasons})" if fail_fast and self._all_failed_first()
                             else f"no relay connected within {timeout:g}s ({reasons})",
                             hint="is a relay running there? `pylon relay` starts one on ws://127.0.0.1:7777; "
                                  "--relay URL (or `pylon config set relays URL`) picks another")
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
        # one relay: awaited inline (gather's task costs ~25 us). This used to hang a targeted
        # ask now and then (tests/market/test_targeted_gone.py, 2 runs in 8) while the OK wait
        # was `asyncio.wait_for`, whose cancellation on 3.11 races with its future finishing;
        # with `asyncio.timeout` (RelayRunner._send_and_wait) 15 runs in 15 passed
        if len(relays) == 1:
            replies = [await relays[0].publish(event, frame, timeout)]
        else:
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

    async def open_subscription(self, sub: Subscription) -> None:
        """Register `sub` and send its REQ to every connected relay (Subscription.open)."""
        await self._ensure_started()
        if self._closed:
            raise RelayError("relay pool is closed")
        self._subs[sub.sub_id] = sub
        self._states[sub.sub_id] = sub.state
        for relay in self._relays.values():
            if relay.state == "connected":
                await relay.send_req(sub.state)

    async def close_subscription(self, sub: Subscription) -> None:
        """Forget `sub` and send CLOSE wherever it is open (Subscription.close)."""
        self._unregister(sub)
        for relay in self._relays.values():
            await relay.send_close(sub.sub_id)

    def _unregister(self, sub: Subscription) -> None:
        if self._subs.get(sub.sub_id) is sub:
            del self._subs[sub.sub_id]
            del self._states[sub.sub_id]

    async def query(self, filters: Sequence[Filter], *, timeout: float = 5.0) -> list[Event]:
        """Stored events until EOSE from every connected relay (or timeout): deduped, newest first."""
        await self._ensure_started()
        sub = self.subscribe(filters)
        async with sub:
            with contextlib.suppress(asyncio.TimeoutError):
                await sub.wait_eose(timeout)
            events = sub.drain()
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

    # -- RunnerHost: what the relay runners call -----------------------------------------
    def open_subscriptions(self) -> Iterable[SubscriptionState]:
        return list(self._states.values())

    def on_event(self, url: str, sub_id: str, event: Event) -> None:
        sub = self._subs.get(sub_id)
        if sub is None:
            self.stats["unknown_sub"] += 1
            return
        verdict = sub.state.admit(event, self._verify)
        self.stats[verdict.value] += 1
        if verdict is Admit.DELIVER:
            sub.deliver(event)
        elif verdict is Admit.INVALID:
            log.warning("dropped event %s from %s: invalid id or signature", event.id[:16], url)
        elif verdict is Admit.UNMATCHED:
            log.warning("dropped event %s from %s: does not match subscription %s", event.id[:16], url, sub_id)

    def on_subscription_changed(self, url: str, sub_id: str) -> None:
        sub = self._subs.get(sub_id)
        if sub is not None:
            sub.sync_eose()

    def on_closed(self, url: str, sub_id: str, message: str) -> None:
        sub = self._subs.get(sub_id)
        if sub is None:
            return
        serving = [r.url for r in self._relays.values() if r.state == "connected"]
        if sub.state.closed_by_relay(url, message, serving) is not None:
            self._unregister(sub)
            sub.end()
        else:
            sub.sync_eose()

    def on_malformed(self) -> None:
        self.stats["malformed"] += 1


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
        async with httpx.AsyncClient(timeout=timeout, trust_env=not is_loopback(url)) as client:
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
