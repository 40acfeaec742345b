"""The thin websockets runner under the pool: one task per relay that connects, backs off,
reads frames into its `RelaySession` (pylon.relay.session) and sends what the session says.

Everything about the protocol lives in the session; the runner holds only what needs the
event loop — the socket, the futures callers wait on (OK, COUNT, AUTH), and the task.
It reaches its pool through `RunnerHost`, a narrow interface the pool implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any, Coroutine, Iterable, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pylon.errors import RelayError
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.framing import can_frame_now, write_framed
from pylon.relay.session import (
    AuthChallenged,
    AuthFinished,
    AuthState,
    ClosedByRelay,
    CountReceived,
    CountRefused,
    EoseReceived,
    EventReceived,
    FrameMalformed,
    NoticeReceived,
    OkReceived,
    RelayReply,
    RelaySession,
    ReqSent,
    SessionEvent,
    SubscriptionState,
    backoff_delay,
)

log = logging.getLogger("pylon.relay.pool")

MAX_FRAME = 4 * 1024 * 1024  # largest frame we accept from a relay


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


class RunnerHost(Protocol):
    """What a runner needs from its pool."""

    def open_subscriptions(self) -> Iterable[SubscriptionState]:
        """Every open subscription (sent again on each new connection)."""
        ...

    def on_event(self, url: str, sub_id: str, event: Event) -> None:
        """An EVENT for `sub_id` (dedupe, verification and delivery are the pool's)."""
        ...

    def on_subscription_changed(self, url: str, sub_id: str) -> None:
        """EOSE, a REQ sent or lost: the subscription's EOSE wait may have changed."""
        ...

    def on_closed(self, url: str, sub_id: str, message: str) -> None:
        """The relay closed `sub_id` for good."""
        ...

    def on_malformed(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run background work for the pool's lifetime."""
        ...


class RelayRunner:
    """One relay connection driven by a task: connect, resubscribe, read, back off."""

    def __init__(self, url: str, host: RunnerHost, subscriptions: Mapping[str, SubscriptionState], *,
                 keys: Keys | None, connect_timeout: float, max_backoff: float) -> None:
        self.url = url
        self.host = host
        self.session = RelaySession(url, keys, subscriptions)
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self.state = "disconnected"
        self.last_error = "not connected yet"
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task | None = None
        self.first_attempt = asyncio.Event()
        self.connected = asyncio.Event()
        self.failures = 0
        self.connections = 0                      # successful connections so far
        self._ok_waiters: dict[str, list[asyncio.Future]] = {}
        self._count_waiters: dict[str, asyncio.Future] = {}
        self._challenge_seen = asyncio.Event()
        self._auth_done: asyncio.Future | None = None
        self._flush_due = False  # frames framed this loop turn, written together at its end

    @property
    def keys(self) -> Keys | None:
        return self.session.keys

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"relay:{self.url}")

    async def stop(self) -> None:
        """Cancel the task and close the socket (the caller gathers the task)."""
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def run(self) -> None:
        while True:
            self.state = "connecting"
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self.connect_timeout,
                    max_size=MAX_FRAME,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    proxy=None if is_loopback(self.url) else True,
                )
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ValueError) as exc:
                self.state = "disconnected"
                self.last_error = f"connect failed: {exc.__class__.__name__}: {exc}".rstrip(": ")
                self.first_attempt.set()
                self.failures += 1
                await asyncio.sleep(self.backoff())
                continue
            self.ws = ws
            self.session.connection_made()
            self._challenge_seen = asyncio.Event()
            self._auth_done = None
            self.state = "connected"
            self.failures = 0
            self.connections += 1
            self.connected.set()
            self.first_attempt.set()
            log.info("relay connected: %s", self.url)
            try:
                for sub in list(self.host.open_subscriptions()):
                    await self.send_req(sub)
                async for frame in ws:
                    try:
                        self._handle(frame)
                    except Exception:  # one bad frame must never end the connection
                        self.host.on_malformed()
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
            await asyncio.sleep(self.backoff())

    def backoff(self) -> float:
        return backoff_delay(self.failures, self.max_backoff)

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
        self.session.connection_lost()
        if self._auth_done is not None and not self._auth_done.done():
            self._auth_done.set_result(False)
        for sub in list(self.host.open_subscriptions()):
            self.host.on_subscription_changed(self.url, sub.sub_id)

    # -- sending ---------------------------------------------------------------------------
    async def _send(self, text: str) -> bool:
        ws = self.ws
        if ws is None or self.state != "connected":
            return False
        if can_frame_now(ws):
            # the common case without websockets' send() coroutine: frame it now, write it with
            # whatever else this loop turn frames in one system call (pylon.relay.framing)
            data = text.encode()  # a lone surrogate raises here, as websockets' send() would
            try:
                ws.protocol.send_text(data)
            except Exception:
                return False
            if not self._flush_due:
                self._flush_due = True
                asyncio.get_running_loop().call_soon(self._write_framed, ws)
            return True
        try:  # back-pressured, or a fragmented send in progress: websockets waits for us
            await ws.send(text)
            return True
        except ConnectionClosed:
            return False

    def _write_framed(self, ws: ClientConnection) -> None:
        self._flush_due = False
        write_framed(ws)  # a gone transport: the reader sees the close and reconnects

    async def _send_all(self, frames: list[str]) -> None:
        for frame in frames:
            await self._send(frame)

    def _flush(self) -> None:
        """Send what the session queued, in order, without holding up the reader."""
        frames = self.session.data_to_send()
        if frames and self.ws is not None:
            self.host.spawn(self._send_all(frames))

    async def send_req(self, sub: SubscriptionState) -> None:
        frame = self.session.req(sub)
        if frame is None:
            return
        self.host.on_subscription_changed(self.url, sub.sub_id)
        if not await self._send(frame):
            sub.relay_done(self.url)
            self.host.on_subscription_changed(self.url, sub.sub_id)

    async def send_close(self, sub_id: str) -> None:
        frame = self.session.close(sub_id)
        if frame is not None:
            await self._send(frame)

    async def publish(self, event: Event, frame: str, timeout: float) -> RelayReply:
        if self.state != "connected" and not self.first_attempt.is_set():
            # The very first connection is still being made: give it its chance.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout, self.connect_timeout)):
                    await self.first_attempt.wait()
        if self.state != "connected":
            return RelayReply(False, "disconnected", f"relay is not connected ({self.last_error})")
        reply = await self._send_and_wait(event.id, frame, timeout)
        if reply.prefix == "auth-required" and self.keys is not None:
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
                # asyncio.timeout, not wait_for: on 3.11 wait_for's cancellation races with the
                # future finishing, and a publish awaited inline could hang (RelayPool.publish)
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
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
            if not await self._send(self.session.count(sub_id, filters)):
                raise RelayError(f"{self.url}: not connected")
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._count_waiters.pop(sub_id, None)
            self.session.count_done(sub_id)

    # -- NIP-42 ----------------------------------------------------------------------------
    def _auth_future(self) -> asyncio.Future:
        if self._auth_done is None or self._auth_done.done():
            self._auth_done = asyncio.get_running_loop().create_future()
        return self._auth_done

    async def authenticate(self, timeout: float) -> bool:
        """Make sure this connection is authenticated (wait for a challenge if needed)."""
        session = self.session
        if session.keys is None:
            return False
        if session.auth is AuthState.ACCEPTED:
            return True
        deadline = time.monotonic() + timeout
        try:
            if session.challenge is None:
                async with asyncio.timeout(timeout):
                    await self._challenge_seen.wait()
            if session.auth is AuthState.ACCEPTED:
                return True
            fut = self._auth_future()  # resolved by the AuthFinished event (or a lost connection)
            if session.auth is not AuthState.PENDING:
                frame = session.start_auth()
                if frame is None:
                    return False
                self.host.spawn(self._send(frame))
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return bool(await asyncio.shield(fut))
        except TimeoutError:
            return False

    # -- reading ---------------------------------------------------------------------------
    def _handle(self, frame: str | bytes) -> None:
        for event in self.session.receive(frame):
            self._dispatch(event)
        self._flush()

    def _dispatch(self, ev: SessionEvent) -> None:
        host = self.host
        if isinstance(ev, EventReceived):
            host.on_event(self.url, ev.sub_id, ev.event)
        elif isinstance(ev, OkReceived):
            waiters = self._ok_waiters.pop(ev.event_id, None)
            for fut in waiters or ():
                if not fut.done():
                    fut.set_result(ev.reply)
        elif isinstance(ev, EoseReceived):
            host.on_subscription_changed(self.url, ev.sub_id)
        elif isinstance(ev, ClosedByRelay):
            log.info("relay %s closed subscription %s: %s", self.url, ev.sub_id, ev.message)
            host.on_closed(self.url, ev.sub_id, ev.message)
        elif isinstance(ev, ReqSent):
            host.on_subscription_changed(self.url, ev.sub_id)
        elif isinstance(ev, AuthChallenged):
            self._challenge_seen.set()
            if self.session.auth is AuthState.PENDING:
                self._auth_future()  # callers of authenticate() wait on this answer
        elif isinstance(ev, AuthFinished):
            if not ev.accepted:
                log.warning("relay %s refused our AUTH: %s", self.url, ev.message)
            if self._auth_done is not None and not self._auth_done.done():
                self._auth_done.set_result(ev.accepted)
        elif isinstance(ev, CountReceived):
            count_fut = self._count_waiters.get(ev.sub_id)
            if count_fut is not None and not count_fut.done():
                count_fut.set_result(ev.count)
        elif isinstance(ev, CountRefused):
            count_fut = self._count_waiters.get(ev.sub_id)
            if count_fut is not None and not count_fut.done():
                count_fut.set_exception(RelayError(f"{self.url} refused COUNT: {ev.message or 'closed'}"))
        elif isinstance(ev, NoticeReceived):
            log.info("NOTICE from %s: %s", self.url, ev.message[:300])
        elif isinstance(ev, FrameMalformed):
            host.on_malformed()
            log.debug("relay %s sent a malformed frame: %s", self.url, ev.error)
