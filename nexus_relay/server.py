"""The relay: websocket handling, the ingest pipeline, subscriptions and fan-out.

Everything that touches a frame runs synchronously on the event loop: parse, check,
verify, then either queue the event for the next group commit (OK and fan-out happen in
the commit callback) or hand a REQ/COUNT to the querier thread (nexus_relay.querier),
whose answer comes back to the loop. No coroutine or future is created per event, which
is what keeps ingest in the thousands per second; no query runs on the loop, which is
what keeps one client's expensive REQ from stalling the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pylon.errors import listen_error
from pylon.nostr import Event, InvalidEvent, InvalidMessage
from pylon.nostr.kinds import AUTH as AUTH_KIND
from pylon.nostr.kinds import is_ephemeral
from pylon.nostr.keys import verify_schnorr
from pylon.nostr.jsonwire import loads
from pylon.nostr.messages import (
    ClientAuth, ClientClose, ClientCount, ClientEvent, ClientReq, auth_frame, closed_frame, count_frame, eose_frame,
    notice_frame, ok_frame, parse_client_message,
)

from nexus_relay import nip11
from nexus_relay.auth import check_auth_event
from nexus_relay.config import RelayConfig
from nexus_relay.connection import FRAME_OVERHEAD, Connection
from nexus_relay.querier import Querier, QueryJob, QueryResult
from nexus_relay.ratelog import RateLimitedLog
from nexus_relay.stats import RelayStats
from nexus_relay.store import DELETION_KIND, EventStore, PendingWrite, WriteResult, address_key
from nexus_relay.subindex import Subscription, SubscriptionIndex

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)

_HEX = frozenset("0123456789abcdef")


def _leading_zero_bits(hex_id: str) -> int:
    bits = 0
    for ch in hex_id:
        nibble = int(ch, 16)
        if nibble == 0:
            bits += 4
            continue
        return bits + (4 - nibble.bit_length())
    return bits


def _filter_values(flt) -> int:
    """How many values a filter holds: what it costs in the subscription index and in SQL."""
    n = len(flt.ids or ()) + len(flt.authors or ()) + len(flt.kinds or ())
    for values in flt.tags.values():
        n += len(values)
    return n


class NexusRelay:
    """An embedded Nostr relay. Use `running_relay()` or `start()` / `stop()`."""

    def __init__(self, db_path: Path, config: RelayConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config or RelayConfig()
        self.db_path = Path(db_path)
        self.host = host
        self.port = port
        self.url = ""
        self.stats = RelayStats()
        self.store = EventStore(self.db_path, fsync=self.config.fsync)
        self.index = SubscriptionIndex()
        self.querier = Querier(self.store, self.config)
        self.connections: set[Connection] = set()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[Connection, PendingWrite]] = []
        self._inflight: dict[str, list[Connection]] = {}  # id -> duplicates waiting for its commit
        self._writer_busy = False
        self._flush_scheduled = False
        self._idle = asyncio.Event()
        self._purger: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "NexusRelay":
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        await asyncio.to_thread(self.store.open)
        self.store.start(self._loop)
        self.querier.start(self._loop)
        cfg = self.config
        try:
            self._server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=functools.partial(nip11.process_request, cfg),
                compression="deflate" if cfg.compression else None,
                max_size=cfg.hard_frame_cap(),
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_interval,
                max_queue=64,
                write_limit=1 << 18,
            )
        except OSError as exc:  # port in use, not allowed, not an address: one line for the user
            raise listen_error("the relay", self.host, self.port, exc) from exc
        sock = next(iter(self._server.sockets))
        bound_host, bound_port = sock.getsockname()[:2]
        self.port = bound_port
        shown = self.host if self.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        self.url = f"ws://{shown}:{bound_port}"
        if cfg.purge_interval_seconds > 0:
            self._purger = self._loop.create_task(self._purge_loop())
        log.info("nexus relay listening on %s (db %s)", self.url, self.db_path)
        return self

    async def stop(self) -> None:
        """Stop accepting, close connections, commit what is queued, close the database."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None
        if self._pending and not self._writer_busy:
            self._flush()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 30)
        await asyncio.to_thread(self.querier.close)
        await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> "NexusRelay":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_interval_seconds)
            self.store.purge_expired(int(time.time()), self._on_purged)

    def _on_purged(self, count: int) -> None:
        self.stats.events_expired += count
        if count:
            log.info("purged %d expired events", count)

    # ------------------------------------------------------------------ connections
    async def _handler(self, ws: ServerConnection) -> None:
        cfg = self.config
        conn = Connection(ws, events_rate=cfg.events_per_second, events_burst=cfg.events_burst,
                          reqs_rate=cfg.reqs_per_second, reqs_burst=cfg.reqs_burst,
                          max_bytes=cfg.max_outbox_bytes, query_rate=cfg.query_seconds_per_second,
                          query_burst=cfg.query_seconds_burst)
        conn.on_drained = self.querier.resume
        conn.on_slow = functools.partial(self.stats.reject, "slow-consumer: closed")
        self.connections.add(conn)
        self.stats.connections += 1
        self.stats.connections_total += 1
        if cfg.auth_required:
            conn.send(auth_frame(conn.challenge))
        try:
            async for frame in ws:
                try:
                    self._on_frame(conn, frame)
                except Exception as exc:  # never let one bad frame end the connection (nor flood the log)
                    _rlog.warn("frame", "nexus: failed to handle a frame: %r", exc)
                    log.debug("nexus: frame handling failed", exc_info=True)
                    self.stats.reject("error:")
                    conn.send(notice_frame("error: internal error while handling the message"))
        except ConnectionClosed:
            pass
        finally:
            conn.cancel()
            self.querier.forget(conn)
            for sub in conn.subs.values():
                self.index.remove(sub)
            self.stats.subscriptions -= len(conn.subs)
            conn.subs.clear()
            self.connections.discard(conn)
            self.stats.connections -= 1

    def _on_frame(self, conn: Connection, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            try:
                frame = frame.decode("utf-8")
            except UnicodeDecodeError:
                self.stats.messages["INVALID"] += 1
                self._refuse_notice(conn, "invalid: binary frame is not valid UTF-8")
                return
        size = len(frame)
        if size * 4 > self.config.max_message_bytes:
            size = len(frame.encode("utf-8", "surrogatepass"))
        if size > self.config.max_message_bytes:
            self.stats.messages["INVALID"] += 1
            self._refuse_unparsed(conn, frame, f"invalid: message too large ({size} > {self.config.max_message_bytes} bytes)")
            return
        try:
            msg = parse_client_message(frame)
        except InvalidMessage as exc:
            self.stats.messages["INVALID"] += 1
            self._refuse_unparsed(conn, frame, str(exc))
            return
        if isinstance(msg, ClientEvent):
            self.stats.messages["EVENT"] += 1
            self._on_event(conn, msg.event)
        elif isinstance(msg, ClientReq):
            self.stats.messages["REQ"] += 1
            self._on_req(conn, msg)
        elif isinstance(msg, ClientClose):
            self.stats.messages["CLOSE"] += 1
            self._on_close(conn, msg.sub_id)
        elif isinstance(msg, ClientCount):
            self.stats.messages["COUNT"] += 1
            self._on_count(conn, msg)
        elif isinstance(msg, ClientAuth):
            self.stats.messages["AUTH"] += 1
            self._on_auth(conn, msg.event)

    # ------------------------------------------------------------------ refusals
    def _refuse_notice(self, conn: Connection, message: str) -> None:
        self.stats.reject(message)
        conn.send(notice_frame(message))

    def _refuse_event(self, conn: Connection, event_id: str, message: str) -> None:
        self.stats.reject(message)
        conn.send(ok_frame(event_id, False, message))

    def _refuse_sub(self, conn: Connection, sub_id: str, message: str) -> None:
        self.stats.reject(message)
        conn.send(closed_frame(sub_id, message))

    def _refuse_unparsed(self, conn: Connection, frame: str, message: str) -> None:
        """Answer a frame that did not parse: OK false if an event id can be read, CLOSED for
        a REQ/COUNT with a readable sub id, else NOTICE."""
        try:
            data = loads(frame)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, list) and len(data) >= 2 and isinstance(data[0], str):
            if data[0] in ("EVENT", "AUTH") and isinstance(data[1], dict):
                event_id = data[1].get("id")
                if isinstance(event_id, str) and len(event_id) == 64 and _HEX.issuperset(event_id):
                    self._refuse_event(conn, event_id, message)
                    return
            if data[0] in ("REQ", "COUNT") and isinstance(data[1], str) and 0 < len(data[1]) <= 1024:
                self._refuse_sub(conn, data[1], message)
                return
        self._refuse_notice(conn, message)

    # ------------------------------------------------------------------ EVENT
    def _on_event(self, conn: Connection, ev: Event) -> None:
        cfg = self.config
        eid = ev.id
        if cfg.auth_required and not conn.authed:
            self._refuse_event(conn, eid, "auth-required: authenticate with NIP-42 before publishing")
            return
        if not conn.events_bucket.take():
            self._refuse_event(conn, eid, "rate-limited: slow down, too many events")
            return
        now = int(time.time())
        problem = self._policy_problem(ev, now)
        if problem is not None:
            self._refuse_event(conn, eid, problem)
            return
        try:
            raw = ev.to_json()
            computed = ev.compute_id()
            raw_size = len(raw) if len(raw) * 4 <= cfg.max_event_bytes else len(raw.encode())
        except (UnicodeEncodeError, InvalidEvent):  # compute_id: InvalidEvent for a lone surrogate
            self._refuse_event(conn, eid, "invalid: event contains invalid unicode (lone surrogate)")
            return
        if raw_size > cfg.max_event_bytes:
            self._refuse_event(conn, eid, f"invalid: event too large ({raw_size} > {cfg.max_event_bytes} bytes)")
            return
        if computed != eid:
            self._refuse_event(conn, eid, "invalid: event id does not match its content")
            return
        ephemeral = is_ephemeral(ev.kind)
        if not ephemeral:
            waiting = self._inflight.get(eid)
            if waiting is not None:  # same id in the batch being committed: answer after its commit
                waiting.append(conn)
                return
            if self.store.has(eid):
                self.stats.duplicates += 1
                conn.send(ok_frame(eid, True, "duplicate: already have this event"))
                return
        if not verify_schnorr(ev.pubkey, ev.sig, bytes.fromhex(eid)):
            self._refuse_event(conn, eid, "invalid: bad signature")
            return
        ev._verified = True
        if ephemeral:
            self.stats.events_ephemeral += 1
            conn.send(ok_frame(eid, True))
            self._fanout(ev, raw)
            return
        self._inflight[eid] = []
        # A regular event that is not a duplicate (checked above) will be stored unless the disk
        # fails or a deletion of its id exists, so live subscribers get it now rather than after
        # the commit's fsync (two of those sat on every job's path: request, then result).
        # Replaceable/addressable events and deletions wait: their write decides what is stored.
        early = (self.config.fanout_before_commit and ev.kind != DELETION_KIND and address_key(ev) is None
                 and not self.store.may_be_deleted(eid))
        self._pending.append((conn, PendingWrite(ev, raw, fanned_out=early)))
        if early:
            self._fanout(ev, raw)
        if not self._writer_busy and not self._flush_scheduled:
            self._flush_scheduled = True
            self._idle.clear()
            asyncio.get_running_loop().call_soon(self._flush)

    def _policy_problem(self, ev: Event, now: int) -> str | None:
        cfg = self.config
        if ev.kind == AUTH_KIND:
            return "invalid: kind 22242 events belong in AUTH messages, not EVENT"
        if ev.created_at > now + cfg.max_future_seconds:
            return f"invalid: created_at is more than {cfg.max_future_seconds} s in the future"
        if len(ev.tags) > cfg.max_event_tags:
            return f"invalid: too many tags ({len(ev.tags)} > {cfg.max_event_tags})"
        if is_ephemeral(ev.kind) and ev.created_at < now - cfg.ephemeral_max_age_seconds:
            return f"invalid: ephemeral event is older than {cfg.ephemeral_max_age_seconds} s"
        expiration = ev.expiration()
        if expiration is not None and not 0 <= expiration <= cfg.max_numeric:
            return "invalid: expiration tag is out of range (0 to 2^53-1)"
        if expiration is not None and expiration <= now:
            return "invalid: event has expired"
        if cfg.min_pow_difficulty > 0:
            bits = _leading_zero_bits(ev.id)
            if bits < cfg.min_pow_difficulty:
                return f"pow: difficulty {bits} is less than {cfg.min_pow_difficulty}"
        return None

    # ------------------------------------------------------------------ group commit
    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._writer_busy or not self._pending:
            if not self._writer_busy:
                self._idle.set()
            return
        limit = self.config.max_batch
        batch = self._pending[:limit]
        del self._pending[:limit]
        self._writer_busy = True
        self.store.submit([item for _, item in batch], functools.partial(self._on_committed, batch))

    def _on_committed(self, batch: list[tuple[Connection, PendingWrite]], results: list[WriteResult]) -> None:
        self._writer_busy = False
        self.stats.commits += 1
        stored: list[PendingWrite] = []
        for (conn, item), (accepted, message, was_stored) in zip(batch, results):
            eid = item.event.id
            if was_stored:
                self.stats.events_stored += 1
                stored.append(item)
            elif accepted:
                self.stats.duplicates += 1
            else:
                self.stats.reject(message)
            conn.send(ok_frame(eid, accepted, message))
            for dup_conn in self._inflight.pop(eid, ()):
                if was_stored or accepted:
                    self.stats.duplicates += 1
                    dup_conn.send(ok_frame(eid, True, "duplicate: already have this event"))
                else:
                    dup_conn.send(ok_frame(eid, False, message))
        if self._pending:
            self._flush()
        else:
            self._idle.set()
        for item in stored:
            if not item.fanned_out:
                self._fanout(item.event, item.raw)

    # ------------------------------------------------------------------ fan-out
    def _fanout(self, ev: Event, raw: str) -> None:
        for sub in self.index.candidates(ev):
            if sub.matches(ev):
                if sub.held is None:
                    sub.conn.send(sub.prefix + raw + "]")
                else:
                    self._hold(sub, ev.id, sub.prefix + raw + "]")

    @staticmethod
    def _hold(sub: Subscription, event_id: str, frame: str) -> None:
        """Keep a live event until the subscription's stored events and EOSE are sent."""
        conn = sub.conn
        cost = len(frame) + FRAME_OVERHEAD
        if conn.over_budget(cost):
            conn.slow_consumer("live events held while its query runs")
            return
        assert sub.held is not None
        sub.held.append((event_id, frame))
        sub.held_bytes += cost
        conn.held_bytes += cost

    # ------------------------------------------------------------------ REQ / COUNT / CLOSE
    def _check_req(self, conn: Connection, sub_id: str, filters: list) -> bool:
        cfg = self.config
        if cfg.auth_required and not conn.authed:
            self._refuse_sub(conn, sub_id, "auth-required: authenticate with NIP-42 before subscribing")
            return False
        if not conn.reqs_bucket.take():
            self._refuse_sub(conn, sub_id, "rate-limited: slow down, too many REQs")
            return False
        if len(sub_id) > cfg.max_subid_length:
            self._refuse_sub(conn, sub_id, f"invalid: subscription id longer than {cfg.max_subid_length} chars")
            return False
        if not filters:
            self._refuse_sub(conn, sub_id, "invalid: at least one filter is required")
            return False
        if len(filters) > cfg.max_filters:
            self._refuse_sub(conn, sub_id, f"invalid: too many filters ({len(filters)} > {cfg.max_filters})")
            return False
        if any(f.search is not None for f in filters):
            self._refuse_sub(conn, sub_id, "unsupported: NIP-50 search is not supported")
            return False
        for flt in filters:
            if _filter_values(flt) > cfg.max_filter_values:
                self._refuse_sub(conn, sub_id, f"invalid: a filter holds more than {cfg.max_filter_values} values")
                return False
        if not conn.query_bucket.available():
            self._refuse_sub(conn, sub_id, "rate-limited: this connection used its query time; slow down")
            return False
        if conn.pending_queries >= cfg.max_pending_queries:
            self._refuse_sub(conn, sub_id, f"rate-limited: more than {cfg.max_pending_queries} queries waiting")
            return False
        return True

    def _drop_sub(self, conn: Connection, sub: Subscription) -> None:
        """Forget a subscription: index, the connection's value count and held events."""
        if conn.subs.get(sub.sub_id) is sub:
            del conn.subs[sub.sub_id]
        self.index.remove(sub)
        self.stats.subscriptions -= 1
        conn.sub_values -= sub.values
        conn.held_bytes -= sub.held_bytes
        sub.held = None
        sub.held_bytes = 0

    def _on_req(self, conn: Connection, msg: ClientReq) -> None:
        sub_id, filters = msg.sub_id, msg.filters
        if not self._check_req(conn, sub_id, filters):
            return
        cfg = self.config
        old = conn.subs.get(sub_id)
        if old is None and len(conn.subs) >= cfg.max_subscriptions:
            self._refuse_sub(conn, sub_id, f"blocked: too many subscriptions (max {cfg.max_subscriptions})")
            return
        values = sum(_filter_values(f) for f in filters)
        if conn.sub_values - (old.values if old is not None else 0) + values > cfg.max_subscription_values:
            self._refuse_sub(conn, sub_id, f"blocked: this connection's subscriptions would hold more than "
                                           f"{cfg.max_subscription_values} filter values; close some first")
            return
        if old is not None:  # reusing a sub id replaces the subscription
            self._drop_sub(conn, old)
        sub = Subscription(conn, sub_id, filters, values)
        sub.held = []
        conn.subs[sub_id] = sub
        conn.sub_values += values
        self.index.add(sub)
        self.stats.subscriptions += 1
        job = QueryJob(conn, False, filters, int(time.time()), functools.partial(self._on_req_result, conn, sub))
        self.querier.submit(job)
        conn.pending_queries += 1

    def _on_req_result(self, conn: Connection, sub: Subscription, result: QueryResult) -> None:
        conn.pending_queries -= 1
        conn.query_bucket.charge(result.seconds)
        if conn.closed or conn.subs.get(sub.sub_id) is not sub:
            return  # closed, replaced or the connection went away meanwhile
        if result.error:
            self._drop_sub(conn, sub)
            self._refuse_sub(conn, sub.sub_id, result.error)
            return
        prefix = sub.prefix
        for _, raw in result.rows:
            conn.send(prefix + raw + "]", live=False)
        conn.send(eose_frame(sub.sub_id))
        held, sub.held = sub.held, None
        conn.held_bytes -= sub.held_bytes
        sub.held_bytes = 0
        if held:
            sent = {event_id for event_id, _ in result.rows}
            for event_id, frame in held:
                if event_id not in sent:
                    conn.send(frame)

    def _on_count(self, conn: Connection, msg: ClientCount) -> None:
        if not self._check_req(conn, msg.sub_id, msg.filters):
            return
        job = QueryJob(conn, True, msg.filters, int(time.time()),
                       functools.partial(self._on_count_result, conn, msg.sub_id))
        self.querier.submit(job)
        conn.pending_queries += 1

    def _on_count_result(self, conn: Connection, sub_id: str, result: QueryResult) -> None:
        conn.pending_queries -= 1
        conn.query_bucket.charge(result.seconds)
        if result.error:
            self._refuse_sub(conn, sub_id, result.error)
        else:
            conn.send(count_frame(sub_id, result.count))

    def _on_close(self, conn: Connection, sub_id: str) -> None:
        sub = conn.subs.get(sub_id)
        if sub is not None:
            self._drop_sub(conn, sub)

    # ------------------------------------------------------------------ AUTH
    def _on_auth(self, conn: Connection, ev: Event) -> None:
        urls = [self.url, self.config.public_url]
        if conn.host:
            urls.append(f"ws://{conn.host}")
        problem = check_auth_event(ev, challenge=conn.challenge, relay_urls=urls, now=int(time.time()),
                                   max_age=self.config.auth_max_age_seconds)
        if problem is not None:
            self._refuse_event(conn, ev.id, problem)
            return
        conn.authed.add(ev.pubkey)
        conn.send(ok_frame(ev.id, True))


@contextlib.asynccontextmanager
async def running_relay(db_path: Path | str | None = None, config: RelayConfig | None = None,
                        host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[NexusRelay]:
    """Run a relay for the duration of the block; `db_path=None` uses a temp file removed on exit."""
    tmpdir: tempfile.TemporaryDirectory | None = None
    if db_path is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="nexus-relay-")
        db_path = Path(tmpdir.name) / "relay.sqlite"
    relay = NexusRelay(Path(db_path), config, host=host, port=port)
    try:
        await relay.start()
        yield relay
    finally:
        await relay.stop()
        if tmpdir is not None:
            with contextlib.suppress(OSError):
                tmpdir.cleanup()


__all__ = ["NexusRelay", "running_relay"]
