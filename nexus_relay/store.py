"""SQLite (WAL) event storage with a tag index and a group-committing writer thread.

Why a writer thread: an `OK true` may only be sent once the event is committed, and one
transaction per event would cap ingest at the disk's fsync rate. All writes that arrive
while the previous transaction is committing are handed over together and committed in
one transaction (group commit); the loop then answers them all. Each event is written
inside its own SAVEPOINT, so an event that fails (whatever the reason) is rolled back
alone and never takes the other clients' events of its batch with it.

Reads: the event loop keeps a connection for the id lookup on ingest, asked only when the
in-memory filter of stored ids (nexus_relay.idfilter) cannot rule the id out. The filter is
filled from the stored ids on a thread of its own after start (~0.9 s for 200,000 events), so
a large database does not delay the relay's start; until it is in, every lookup reads. REQ and COUNT
queries run elsewhere (nexus_relay.querier) through `run_query` / `run_count`, which take
the connection to use (and `run_query` a row/byte budget). WAL lets all of them read while
the writer commits.

Replaceable/addressable resolution, NIP-09 deletions and tombstones are decided inside the
writer transaction, so concurrent submissions can never both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pylon.nostr import Event, Filter
from pylon.nostr.kinds import is_addressable, is_replaceable

from nexus_relay.idfilter import MIN_CAPACITY, IdFilter
from nexus_relay.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)

DELETION_KIND = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    pubkey TEXT NOT NULL,
    kind INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    d TEXT,                 -- '' for replaceable, the d tag for addressable, NULL otherwise
    expires_at INTEGER,     -- NIP-40
    raw TEXT NOT NULL       -- canonical event JSON, sent as-is
);
CREATE INDEX IF NOT EXISTS ev_created ON events(created_at DESC, id);
CREATE INDEX IF NOT EXISTS ev_pubkey ON events(pubkey, created_at DESC);
CREATE INDEX IF NOT EXISTS ev_kind ON events(kind, created_at DESC);
CREATE INDEX IF NOT EXISTS ev_addr ON events(pubkey, kind, d) WHERE d IS NOT NULL;
CREATE INDEX IF NOT EXISTS ev_expires ON events(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tags(
    seq INTEGER NOT NULL,   -- events.seq
    name TEXT NOT NULL,     -- single-letter tag names only (what NIP-01 indexes)
    value TEXT NOT NULL     -- the tag's first value
);
CREATE INDEX IF NOT EXISTS tag_nv ON tags(name, value);
CREATE INDEX IF NOT EXISTS tag_seq ON tags(seq);
CREATE TABLE IF NOT EXISTS deleted_ids(id TEXT PRIMARY KEY, pubkey TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleted_addrs(
    kind INTEGER NOT NULL, pubkey TEXT NOT NULL, d TEXT NOT NULL, until INTEGER NOT NULL,
    PRIMARY KEY(kind, pubkey, d)
) WITHOUT ROWID;
"""

# Results the writer reports per submitted event: (accepted, message, stored)
WriteResult = tuple[bool, str, bool]
DUPLICATE: WriteResult = (True, "duplicate: already have this event", False)
REPLACED: WriteResult = (False, "replaced: have newer event", False)
DELETED: WriteResult = (False, "blocked: this event was deleted by its author", False)
STORED: WriteResult = (True, "", True)
FAILED: WriteResult = (False, "error: could not store the event", False)


@dataclass(slots=True)
class PendingWrite:
    """An event that passed every check and waits for the next group commit."""

    event: Event
    raw: str  # canonical JSON
    fanned_out: bool = False  # sent to live subscribers before the commit (NexusRelay._on_event)


def address_key(event: Event) -> str | None:
    """The `d` column: '' for replaceable kinds, the d tag for addressable, None otherwise."""
    if is_replaceable(event.kind):
        return ""
    if is_addressable(event.kind):
        return event.d_tag()
    return None


class _Stop:
    pass


WAL_SIZE_LIMIT = 64 << 20


def _storage_error(path: Path, exc: BaseException) -> Exception:
    """One line for a relay database that cannot be used, naming the likely cause."""
    from pylon.errors import StorageError

    text = str(exc)
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        why = "is read-only (file, folder or file system); give the relay a writable --db"
    elif "full" in text or getattr(exc, "errno", None) == 28:
        why = "cannot grow: the disk is full; free space or move --db"
    elif "not a database" in text or "malformed" in text:
        why = "is not a usable SQLite database; move it away or pass another --db"
    else:
        why = f"cannot be opened ({text})"
    return StorageError(f"relay database {path} {why}")


class EventStore:
    """The relay's database. `open()` then `start(loop)`; reads from the loop thread only."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._has_id_tombstones = False
        self._has_addr_tombstones = False
        # ids stored (load_ids); until it is loaded the writer keeps the ids it adds aside
        self._ids: IdFilter | None = None
        self._ids_pending: list[str] | None = []  # None once loaded, or given up
        self._ids_lock = threading.Lock()
        self._ids_loader: threading.Thread | None = None
        self._stop_loading = threading.Event()
        self.on_removed: Callable[[int], None] | None = None  # stats hook (called on the loop)

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-16000")
        # a checkpoint that resets the WAL also truncates it to this size: one burst (or a
        # disk-full episode) no longer leaves a WAL of hundreds of MB behind for ever
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    def open(self) -> None:
        """Create the schema (idempotent) and open the writer and reader connections.

        A database the relay cannot write (read-only file or file system, full disk, not SQLite)
        is a StorageError with one line saying which and what to do, not a traceback later."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # a new database is 0600 (SQLite gives its -wal/-shm the same)
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self._w = self._connect()
            self._w.executescript(_SCHEMA)
            self._w.execute("BEGIN IMMEDIATE")  # a real write, rolled back: read-only shows here
            try:
                self._w.execute("CREATE TABLE _nexus_write_probe(x)")
            finally:
                self._w.execute("ROLLBACK")
        except (sqlite3.Error, OSError) as exc:
            if self._w is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._w.close()
                self._w = None
            raise _storage_error(self.path, exc) from None
        self._open_rest()

    def _open_rest(self) -> None:
        assert self._w is not None
        self._has_id_tombstones = self._w.execute("SELECT 1 FROM deleted_ids LIMIT 1").fetchone() is not None
        self._has_addr_tombstones = self._w.execute("SELECT 1 FROM deleted_addrs LIMIT 1").fetchone() is not None
        self._r = self._connect()
        self._r.execute("PRAGMA query_only=1")

    def connect_reader(self) -> sqlite3.Connection:
        """A read-only connection for another thread (the querier)."""
        conn = self._connect()
        conn.execute("PRAGMA query_only=1")
        return conn

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._writer_main, name="nexus-writer", daemon=True)
        self._thread.start()
        self._ids_loader = threading.Thread(target=self.load_ids, name="nexus-ids", daemon=True)
        self._ids_loader.start()

    def load_ids(self) -> None:
        """Fill the filter of stored ids from the database and put it in use (start() runs this
        on its own thread). Every id is in it: those stored before the read began are read, and
        the writer kept aside those it stored since open, added here under its lock. If it
        fails or the relay stops first, every lookup keeps reading the database."""
        ids: IdFilter | None = None
        conn = self.connect_reader()
        try:
            stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            ids = IdFilter(max(2 * stored, MIN_CAPACITY))
            for n, (event_id,) in enumerate(conn.execute("SELECT id FROM events")):
                if n % 10_000 == 0 and self._stop_loading.is_set():
                    ids = None
                    break
                ids.add(event_id)
        except sqlite3.Error as exc:
            _rlog.warn("ids", "nexus: the filter of stored ids was not loaded: %s", exc)
            ids = None
        finally:
            conn.close()
        with self._ids_lock:
            if ids is not None:
                for event_id in self._ids_pending or ():
                    ids.add(event_id)
            self._ids_pending = None
            self._ids = ids

    @property
    def ids_loaded(self) -> bool:
        return self._ids is not None

    def close(self) -> None:
        """Finish every queued write, stop the writer thread, close both connections (the WAL
        is checkpointed and truncated first, so the next start opens a short file)."""
        self._stop_loading.set()
        if self._ids_loader is not None:
            self._ids_loader.join()
            self._ids_loader = None
        if self._thread is not None:
            self._jobs.put(_Stop())
            self._thread.join()
            self._thread = None
        if self._r is not None:
            with contextlib.suppress(sqlite3.Error):
                self._r.close()
            self._r = None
        if self._w is not None:
            with contextlib.suppress(sqlite3.Error):
                self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for conn in (self._r, self._w):
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing twice
                    pass
        self._r = self._w = None

    # ------------------------------------------------------------------ writes
    def submit(self, batch: Sequence[PendingWrite], done: Callable[[list[WriteResult]], None]) -> None:
        """Queue a batch; `done(results)` runs on the loop after the transaction committed."""
        self._jobs.put(("write", batch, done))

    def purge_expired(self, now: int, done: Callable[[int], None]) -> None:
        """Delete events whose NIP-40 expiration passed; `done(count)` runs on the loop."""
        self._jobs.put(("purge", now, done))

    def _writer_main(self) -> None:
        assert self._w is not None
        while True:
            job = self._jobs.get()
            if isinstance(job, _Stop):
                return
            op, arg, done = job
            try:
                self._w.execute("BEGIN IMMEDIATE")
                try:
                    result = self._write_batch(arg) if op == "write" else self._purge(arg)
                    self._w.execute("COMMIT")
                except BaseException:
                    self._w.execute("ROLLBACK")
                    raise
            except Exception as exc:  # the disk or the database itself: one line, not a traceback per batch
                _rlog.warn("txn-" + op, "nexus writer: %s transaction failed: %s", op, exc)
                result = [FAILED] * len(arg) if op == "write" else 0
            self._deliver(done, result)
            if self._jobs.empty():
                self._shrink_wal()

    def _shrink_wal(self) -> None:
        """Between batches, when the WAL has outgrown WAL_SIZE_LIMIT: a TRUNCATE checkpoint
        that waits at most ~50 ms for readers. Automatic (PASSIVE) checkpoints cannot restart a
        WAL that readers keep using, so under steady load it grew without bound, and a relay
        killed then had to replay hundreds of MB at start (seconds; 9-12 s seen under load)."""
        try:
            if self.path.with_name(self.path.name + "-wal").stat().st_size <= WAL_SIZE_LIMIT:
                return
        except OSError:
            return
        w = self._w
        assert w is not None
        try:
            w.execute("PRAGMA busy_timeout=50")
            w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            _rlog.warn("wal", "nexus writer: WAL checkpoint skipped: %s", exc)
        finally:
            with contextlib.suppress(sqlite3.Error):
                w.execute("PRAGMA busy_timeout=10000")

    def _deliver(self, done: Callable, result: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(done, result)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _write_batch(self, batch: Sequence[PendingWrite]) -> list[WriteResult]:
        w = self._w
        assert w is not None
        results: list[WriteResult] = []
        insert_event = "INSERT OR IGNORE INTO events(id,pubkey,kind,created_at,d,expires_at,raw) VALUES(?,?,?,?,?,?,?)"
        insert_tags = "INSERT INTO tags(seq,name,value) VALUES(?,?,?)"
        for item in batch:
            w.execute("SAVEPOINT ev")
            try:
                result = self._write_one(item, insert_event, insert_tags)
                w.execute("RELEASE ev")
            except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
                # this event only: the rest of the batch (other clients' events) still commits
                w.execute("ROLLBACK TO ev")
                w.execute("RELEASE ev")
                _rlog.warn("event", "nexus writer: event %s not stored: %s", item.event.id, exc)
                result = FAILED
            results.append(result)
        return results

    def _write_one(self, item: PendingWrite, insert_event: str, insert_tags: str) -> WriteResult:
        w = self._w
        assert w is not None
        ev = item.event
        d = address_key(ev)
        if self._has_id_tombstones:
            row = w.execute("SELECT pubkey FROM deleted_ids WHERE id=?", (ev.id,)).fetchone()
            if row is not None and row[0] == ev.pubkey:
                return DELETED
        if d is not None:
            if self._has_addr_tombstones:
                row = w.execute(
                    "SELECT until FROM deleted_addrs WHERE kind=? AND pubkey=? AND d=?", (ev.kind, ev.pubkey, d)
                ).fetchone()
                if row is not None and ev.created_at <= row[0]:
                    return DELETED
            verdict = self._replace(ev, d)
            if verdict is not None:
                return verdict
        cur = w.execute(insert_event, (ev.id, ev.pubkey, ev.kind, ev.created_at, d, ev.expiration(), item.raw))
        if cur.rowcount == 0:
            return DUPLICATE
        with self._ids_lock:  # before the commit is reported (a rolled-back add is a false positive)
            if self._ids is not None:
                self._ids.add(ev.id)
            elif self._ids_pending is not None:
                self._ids_pending.append(ev.id)
        seq = cur.lastrowid
        rows = [(seq, t[0], t[1]) for t in ev.tags if len(t) >= 2 and len(t[0]) == 1]
        if rows:
            w.executemany(insert_tags, rows)
        if ev.kind == DELETION_KIND:
            self._apply_deletion(ev)
        return STORED

    def _replace(self, ev: Event, d: str) -> WriteResult | None:
        """NIP-01 replacement: newer created_at wins, a tie goes to the lower id."""
        w = self._w
        assert w is not None
        rows = w.execute(
            "SELECT seq, id, created_at FROM events WHERE pubkey=? AND kind=? AND d=?", (ev.pubkey, ev.kind, d)
        ).fetchall()
        for seq, old_id, old_created in rows:
            if old_id == ev.id:
                return DUPLICATE
            if old_created > ev.created_at or (old_created == ev.created_at and old_id < ev.id):
                return REPLACED
        for seq, _, _ in rows:
            self._delete_seq(seq)
        return None

    def _delete_seq(self, seq: int) -> None:
        w = self._w
        assert w is not None
        w.execute("DELETE FROM tags WHERE seq=?", (seq,))
        w.execute("DELETE FROM events WHERE seq=?", (seq,))

    def _apply_deletion(self, ev: Event) -> None:
        """NIP-09: remove the author's own events named by `e` ids and `a` coordinates."""
        w = self._w
        assert w is not None
        for tag in ev.tags:
            if len(tag) < 2:
                continue
            if tag[0] == "e":
                target = tag[1]
                if len(target) != 64:
                    continue
                row = w.execute("SELECT seq, pubkey, kind FROM events WHERE id=?", (target,)).fetchone()
                if row is not None:
                    seq, pubkey, kind = row
                    if pubkey != ev.pubkey or kind == DELETION_KIND:
                        continue  # only own events; deleting a deletion has no effect
                    self._delete_seq(seq)
                w.execute("INSERT OR IGNORE INTO deleted_ids(id, pubkey) VALUES(?,?)", (target, ev.pubkey))
                self._has_id_tombstones = True
            elif tag[0] == "a":
                parts = tag[1].split(":", 2)
                if len(parts) != 3 or parts[1] != ev.pubkey or not parts[0].isdigit():
                    continue
                kind, d = int(parts[0]), parts[2]
                if not (is_replaceable(kind) or is_addressable(kind)):
                    continue
                if is_replaceable(kind):
                    d = ""
                for (seq,) in w.execute(
                    "SELECT seq FROM events WHERE pubkey=? AND kind=? AND d=? AND created_at<=?",
                    (ev.pubkey, kind, d, ev.created_at),
                ).fetchall():
                    self._delete_seq(seq)
                w.execute(
                    "INSERT INTO deleted_addrs(kind,pubkey,d,until) VALUES(?,?,?,?) "
                    "ON CONFLICT(kind,pubkey,d) DO UPDATE SET until=max(until, excluded.until)",
                    (kind, ev.pubkey, d, ev.created_at),
                )
                self._has_addr_tombstones = True

    def _purge(self, now: int) -> int:
        w = self._w
        assert w is not None
        seqs = [r[0] for r in w.execute("SELECT seq FROM events WHERE expires_at IS NOT NULL AND expires_at<=?", (now,))]
        for seq in seqs:
            self._delete_seq(seq)
        return len(seqs)

    # ------------------------------------------------------------------ reads (loop thread)
    def has(self, event_id: str) -> bool:
        """Is this id stored? The filter, once loaded, answers "no" for nearly every new event."""
        ids = self._ids
        if ids is not None and not ids.may_contain(event_id):
            return False
        assert self._r is not None
        return self._r.execute("SELECT 1 FROM events WHERE id=?", (event_id,)).fetchone() is not None

    def may_be_deleted(self, event_id: str) -> bool:
        """A NIP-09 deletion of this id is stored (by anyone): its write may refuse it."""
        if not self._has_id_tombstones:
            return False
        assert self._r is not None
        return self._r.execute("SELECT 1 FROM deleted_ids WHERE id=?", (event_id,)).fetchone() is not None

    def stored_count(self) -> int:
        assert self._r is not None
        return int(self._r.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def run_query(db: sqlite3.Connection, filters: Iterable[Filter], now: int, max_limit: int,
              max_rows: int, max_bytes: int) -> list[tuple[str, str]]:
    """Stored events matching any filter as (id, raw), newest first (id ascending on ties), deduped.

    Each filter's own `limit` (clamped to `max_limit`, which is also the default) still
    applies; the row and byte budgets bound the whole REQ, whose 200 filters x 500 rows
    would otherwise be 100,000 events: past either, the rest is cut."""
    found: dict[str, tuple[int, str]] = {}
    size = 0
    for flt in filters:
        limit = min(max_limit if flt.limit is None else flt.limit, max_limit, max_rows - len(found))
        if limit <= 0:
            continue
        built = _where(flt, now)
        if built is None:
            continue
        where, params = built
        sql = f"SELECT id, created_at, raw FROM events WHERE {where} ORDER BY created_at DESC, id ASC LIMIT ?"
        for event_id, created_at, raw in db.execute(sql, (*params, limit)):
            if event_id in found:
                continue
            found[event_id] = (created_at, raw)
            size += len(raw)
            if size >= max_bytes:
                break
        if size >= max_bytes:
            break
    ordered = sorted(found.items(), key=lambda item: (-item[1][0], item[0]))
    return [(event_id, raw) for event_id, (_, raw) in ordered]


def run_count(db: sqlite3.Connection, filters: Iterable[Filter], now: int) -> int:
    """NIP-45: how many distinct stored events match any filter (limit ignored)."""
    parts: list[str] = []
    params: list[object] = []
    for flt in filters:
        built = _where(flt, now)
        if built is None:
            continue
        parts.append(f"SELECT id FROM events WHERE {built[0]}")
        params.extend(built[1])
    if not parts:
        return 0
    sql = "SELECT COUNT(*) FROM (" + " UNION ".join(parts) + ")"
    return int(db.execute(sql, params).fetchone()[0])


def _in(column: str, values: Iterable[object], where: list[str], params: list[object]) -> None:
    vals = list(values)
    where.append(f"{column} IN ({','.join('?' * len(vals))})")
    params.extend(vals)


def _where(flt: Filter, now: int) -> tuple[str, list[object]] | None:
    """SQL WHERE clause for one filter; None when it can match nothing (an empty list)."""
    where: list[str] = ["(expires_at IS NULL OR expires_at>?)"]
    params: list[object] = [now]
    for column, values in (("id", flt.ids), ("pubkey", flt.authors), ("kind", flt.kinds)):
        if values is not None:
            if not values:
                return None
            _in(column, values, where, params)
    if flt.since is not None:
        where.append("created_at>=?")
        params.append(flt.since)
    if flt.until is not None:
        where.append("created_at<=?")
        params.append(flt.until)
    for name, values in flt.tags.items():
        if not values:
            return None
        vals = list(values)
        where.append(f"seq IN (SELECT seq FROM tags WHERE name=? AND value IN ({','.join('?' * len(vals))}))")
        params.append(name)
        params.extend(vals)
    return " AND ".join(where), params
