"""The client's receipts ledger: one row per payment, written BEFORE the money moves.

Exactly-once paying rests on three things here:
1. `record_intent` writes a 'pending' row (job id, provider, payment hash, amount, bolt11)
   before the wallet is asked to pay. Unique indexes on job_id and on payment_hash (among
   rows that are not 'failed') make a second intent for the same job or the same invoice
   impossible, across tasks and processes: it raises PaymentRefused("already_paid").
2. `mark_paid` / `mark_failed` close the row once the wallet answered. A row is marked failed
   only when the wallet says for sure that no money moved.
3. After a crash, rows left 'pending' are settled by `recover(wallet)`, which asks the
   wallet (`lookup_payment`) what really happened.

SQLite in WAL mode under PYLON_HOME (`db_path("ledger")`), synchronous=FULL: a committed
intent is on disk before the wallet is asked. The two writes that `recover` can rebuild (a
receipt marked paid, a result noted) commit without an fsync of their own. Each write is one short BEGIN IMMEDIATE
transaction. Async code uses the `*_async` writes, which run the same methods on the ledger's
one writer thread, so the event loop keeps serving while SQLite fsyncs (it used to stall
~1-3 ms per write, twice per payment, for every job of the process). That thread commits the
writes queued meanwhile together (pylon.group_commit: one transaction, a savepoint per write,
one fsync; each caller still gets its own outcome, and only after the commit). Reads go
through a second connection: in WAL mode they never wait for a writer's fsync. Days are UTC days.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from pylon.errors import PaymentError
from pylon.home import db_path, private_file
from pylon.group_commit import GroupCommitWriter, Savepoint, WriterClosed
from pylon.storage import WriteTransaction
from pylon.customer.invoice_check import ABOVE_BUDGET, ALREADY_PAID, PaymentRefused
from pylon.customer.lease import OwnerLease, owner_alive

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import InvoiceState, Wallet

log = logging.getLogger(__name__)

PENDING, PAID, FAILED = "pending", "paid", "failed"
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    payment_hash TEXT NOT NULL,
    amount_msat INTEGER NOT NULL CHECK (amount_msat >= 0),
    fee_msat INTEGER NOT NULL DEFAULT 0 CHECK (fee_msat >= 0),
    bolt11 TEXT NOT NULL,
    preimage TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed')),
    session_id TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    paid_at REAL,
    updated_at REAL NOT NULL,
    owner TEXT,
    refund_msat INTEGER NOT NULL DEFAULT 0 CHECK (refund_msat >= 0),
    refund_hash TEXT,
    refund_status TEXT,
    result_event_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS receipts_one_per_job ON receipts(job_id) WHERE status != 'failed';
CREATE UNIQUE INDEX IF NOT EXISTS receipts_one_per_hash ON receipts(payment_hash) WHERE status != 'failed';
-- any receipt of a hash, failed ones too (get, mark_failed, a late payment): the partial index
-- above cannot serve those, and a scan grew with every receipt ever written
CREATE INDEX IF NOT EXISTS receipts_by_hash ON receipts(payment_hash);
CREATE INDEX IF NOT EXISTS receipts_by_time ON receipts(created_at);
CREATE INDEX IF NOT EXISTS receipts_by_status ON receipts(status);
-- the session budget's sum (Budget.hold before every job, and twice per payment): no table scan
CREATE INDEX IF NOT EXISTS receipts_by_session ON receipts(session_id);
"""

_COLS = ("id, job_id, provider, payment_hash, amount_msat, fee_msat, bolt11, preimage, status, "
         "session_id, error, created_at, paid_at, updated_at, owner, refund_msat, refund_hash, refund_status, "
         "result_event_id")
# Running totals for the budgets (issue 15): the daily and session sums were a SUM over every
# receipt of the day/session, twice per payment, so a customer's CPU per paid job grew with
# its day's jobs (2.9 ms per sum at 10,000 receipts). Triggers keep one row per UTC day and
# per session in step with every write to receipts, by any process and any version of this
# code (they live in the file), in the writing transaction itself; `_spent` reads one row.
_SPENT = "CASE WHEN {r}.status = 'failed' THEN 0 ELSE {r}.amount_msat + {r}.fee_msat - {r}.refund_msat END"
_DAY = "CAST({r}.created_at AS INTEGER) / 86400"  # the UTC day number, exact: floor(seconds) // 86400


def _bump(r: str, sign: str) -> str:
    spent, day = _SPENT.format(r=r), _DAY.format(r=r)
    return (f"INSERT INTO spend_by_day(day, msat) VALUES ({day}, {sign}({spent}))"
            " ON CONFLICT(day) DO UPDATE SET msat = msat + excluded.msat;"
            f" INSERT INTO spend_by_session(session_id, msat) SELECT {r}.session_id, {sign}({spent})"
            f" WHERE {r}.session_id IS NOT NULL ON CONFLICT(session_id) DO UPDATE SET msat = msat + excluded.msat;")


_TOTALS = (
    "CREATE TABLE IF NOT EXISTS spend_by_day (day INTEGER PRIMARY KEY, msat INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spend_by_session (session_id TEXT PRIMARY KEY, msat INTEGER NOT NULL)",
    "DELETE FROM spend_by_day",
    "DELETE FROM spend_by_session",
    f"INSERT INTO spend_by_day(day, msat) SELECT {_DAY.format(r='receipts')}, SUM({_SPENT.format(r='receipts')})"
    " FROM receipts GROUP BY 1",
    f"INSERT INTO spend_by_session(session_id, msat) SELECT session_id, SUM({_SPENT.format(r='receipts')})"
    " FROM receipts WHERE session_id IS NOT NULL GROUP BY 1",
    f"CREATE TRIGGER IF NOT EXISTS receipts_spend_ins AFTER INSERT ON receipts BEGIN {_bump('NEW', '+')} END",
    f"CREATE TRIGGER IF NOT EXISTS receipts_spend_del AFTER DELETE ON receipts BEGIN {_bump('OLD', '-')} END",
    f"CREATE TRIGGER IF NOT EXISTS receipts_spend_upd AFTER UPDATE OF status, amount_msat, fee_msat, refund_msat,"
    f" created_at, session_id ON receipts BEGIN {_bump('OLD', '-')} {_bump('NEW', '+')} END",
)

# columns added after the first release: (name, declaration) for ALTER TABLE on older files
_ADDED = (("owner", "TEXT"), ("refund_msat", "INTEGER NOT NULL DEFAULT 0"), ("refund_hash", "TEXT"),
          ("refund_status", "TEXT"), ("result_event_id", "TEXT"))


@dataclass(frozen=True, slots=True)
class Receipt:
    """One payment the client made or is making."""

    id: int
    job_id: str
    provider: str          # provider pubkey (hex)
    payment_hash: str
    amount_msat: int
    fee_msat: int
    bolt11: str
    preimage: str | None
    status: str            # 'pending' | 'paid' | 'failed'
    session_id: str | None
    error: str | None
    created_at: float
    paid_at: float | None
    updated_at: float
    owner: str | None = None        # the lease of the process that wrote the intent (pylon.customer.lease)
    refund_msat: int = 0            # what the provider paid back (see docs/PROTOCOL.md, "Refunds")
    refund_hash: str | None = None  # payment hash of our refund invoice
    refund_status: str | None = None  # None | 'requested' | 'refunded'
    result_event_id: str | None = None  # the result we got for this payment (None: none yet)

    @property
    def spent_msat(self) -> int:
        """What this receipt costs the budget (pending counts: the money may be gone; refunds come back)."""
        return 0 if self.status == FAILED else self.amount_msat + self.fee_msat - self.refund_msat

    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar: no need for asdict's recursive copy (~30 us; this is ~2 us,
        # and every paid ask's outcome carries one)
        return {name: getattr(self, name) for name in _RECEIPT_FIELDS}


_RECEIPT_FIELDS = tuple(f.name for f in fields(Receipt))


def _log_write_failure(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("receipts ledger: a bookkeeping write failed: %s", fut.exception())


@dataclass(frozen=True, slots=True)
class SpendLimits:
    """Limits checked inside the intent transaction (None = unlimited)."""

    daily_msat: int | None = None
    session_msat: int | None = None
    session_id: str | None = None


def utc_day_start(now: float | None = None) -> float:
    t = time.time() if now is None else now
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


class LedgerError(PaymentError):
    """The receipts ledger could not be read or written, or a receipt is not where expected."""


class Ledger:
    """Receipts in SQLite. Thread-safe; several processes may share the file."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout_ms: int = 15_000):
        self.path = Path(path) if path is not None else db_path("ledger")
        self._lock = threading.RLock()   # the write connection
        self._rlock = threading.Lock()   # the read connection
        self._writer: GroupCommitWriter | None = None  # started by the first *_async write
        self._writer_guard = threading.Lock()
        self._closed = False
        self._lease: OwnerLease | None = None  # taken by the first intent (pylon.customer.lease)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(private_file(self.path)), timeout=busy_timeout_ms / 1000, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(receipts)")}
            for name, decl in _ADDED:
                if name not in have:
                    self._db.execute(f"ALTER TABLE receipts ADD COLUMN {name} {decl}")
            self._ensure_totals()
            self._rdb = sqlite3.connect(str(self.path), timeout=busy_timeout_ms / 1000, isolation_level=None,
                                        check_same_thread=False)
            self._rdb.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self._rdb.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the receipts ledger {self.path}: {exc}") from None

    def _ensure_totals(self) -> None:
        """Create the budget running totals from the receipts, once per file (first open by
        this version): tables, contents and triggers in one transaction, so no write by
        another process falls between the sums and the triggers."""
        with WriteTransaction(self._db, self._lock) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'receipts_spend_upd'").fetchone():
                return
            for statement in _TOTALS:
                db.execute(statement)

    def close(self) -> None:
        with self._writer_guard:
            self._closed = True  # no writer starts after this (_writer_thread)
        self.stop_writer()
        with self._lock:
            self._db.close()
            if self._lease is not None:
                self._lease.release()
                self._lease = None
        with self._rlock:
            self._rdb.close()

    def stop_writer(self) -> None:
        """Commit the writes queued so far and end the writer thread; the ledger stays open and
        its next async write starts a new one. Why: an owner that goes quiet but keeps its
        ledger (a closed DSPy LM keeps its budget's session, `SwarmHub.close`) would otherwise
        hold an idle thread for the rest of the process. The old writer is retired only once
        its queue is committed (under the guard, so no second writer runs beside it, and its
        writes still see themselves inside their batch); a write handed to it a moment too late
        goes to the new one (`_submit`)."""
        with self._writer_guard:
            writer = self._writer
            if writer is not None:
                writer.close()  # writes already queued finish (and commit) first
                self._writer = None

    def _submit(self, fn: Callable[[], T], *, synced: bool) -> "asyncio.Future[T]":
        """Queue `fn` on the writer thread; once more on a new writer if `stop_writer` retired
        the one this call found (WriterClosed: nothing of it ran)."""
        try:
            return self._writer_thread().submit(fn, synced=synced)
        except WriterClosed:
            return self._writer_thread().submit(fn, synced=synced)

    def _writer_thread(self) -> GroupCommitWriter:
        with self._writer_guard:
            if self._closed:  # a thread on a closed connection would only fail, and never end
                raise LedgerError("the receipts ledger is closed")
            if self._writer is None:
                self._writer = GroupCommitWriter(self._db, self._lock, name="pylon-ledger")
            return self._writer

    async def _on_writer(self, fn: Callable[..., T], *args: Any, synced: bool = True, **kwargs: Any) -> T:
        """Run a write method on the ledger's writer thread. If the awaiting task is cancelled, a
        write already started still completes — the same state as a crash after it, which
        `recover` handles. `synced=False`: a write `recover` can rebuild after a power loss,
        committed without an fsync when nothing else in its batch needs one."""
        return await self._submit(functools.partial(fn, *args, **kwargs), synced=synced)

    async def record_intent_async(self, **kwargs: Any) -> Receipt:
        """`record_intent` off the event loop (same arguments, same errors)."""
        return await self._on_writer(self.record_intent, **kwargs)

    async def mark_paid_async(self, payment_hash: str, **kwargs: Any) -> Receipt:
        """`mark_paid` off the event loop, without an fsync of its own: lost with the machine's
        power, the receipt is left pending, which is what `recover` settles by asking the
        wallet (and a pending receipt counts against the budget meanwhile). Each paid ask
        waits for one fsync less (0.13 ms on the test VM's disk, milliseconds on many others)."""
        return await self._on_writer(self.mark_paid, payment_hash, synced=False, **kwargs)

    async def mark_failed_async(self, payment_hash: str, error: str, **kwargs: Any) -> Receipt:
        """`mark_failed` off the event loop."""
        return await self._on_writer(self.mark_failed, payment_hash, error, **kwargs)

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------
    def _tx(self) -> WriteTransaction | Savepoint:
        """A write transaction; on the writer thread inside a group commit, a savepoint of it."""
        writer = self._writer
        if writer is not None and writer.in_batch():
            return Savepoint(self._db)
        return WriteTransaction(self._db, self._lock)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._rlock:
            try:
                return self._rdb.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"receipts ledger read failed: {exc}") from None

    def _one(self, db: sqlite3.Connection, where: str, args: tuple) -> Receipt | None:
        row = db.execute(f"SELECT {_COLS} FROM receipts WHERE {where} ORDER BY id DESC LIMIT 1", args).fetchone()
        return Receipt(*row) if row else None

    def _for_hash(self, db: sqlite3.Connection, payment_hash: str) -> Receipt:
        """The live (pending/paid) receipt for a hash, else its latest failed one; LedgerError if none."""
        r = self._one(db, "payment_hash = ? AND status != 'failed'", (payment_hash,)) \
            or self._one(db, "payment_hash = ?", (payment_hash,))
        if r is None:
            raise LedgerError(f"no receipt for payment hash {payment_hash[:16]}…")
        return r

    @staticmethod
    def _spent(db: sqlite3.Connection, since: float | None = None, session_id: str | None = None) -> int:
        if session_id is None and since is not None and since % 86400 == 0:  # since a UTC midnight: the day rows
            row = db.execute("SELECT COALESCE(SUM(msat), 0) FROM spend_by_day WHERE day >= ?",
                             (int(since) // 86400,)).fetchone()
            return int(row[0])
        if session_id is not None and since is None:
            row = db.execute("SELECT msat FROM spend_by_session WHERE session_id = ?", (session_id,)).fetchone()
            return int(row[0]) if row else 0
        sql = "SELECT COALESCE(SUM(amount_msat + fee_msat - refund_msat), 0) FROM receipts WHERE status != 'failed'"
        args: list[Any] = []
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since)
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        return int(db.execute(sql, args).fetchone()[0])

    # -- writes ------------------------------------------------------------------------------
    def record_intent(self, *, job_id: str, provider: str, payment_hash: str, amount_msat: int, bolt11: str,
                      session_id: str | None = None, limits: SpendLimits | None = None,
                      now: float | None = None) -> Receipt:
        """Write a 'pending' receipt before paying. Raises PaymentRefused:
        "already_paid" when this job or this payment hash already has a non-failed receipt,
        "above_budget" when `limits` (checked in the same transaction) would be exceeded."""
        if not job_id or not payment_hash:
            raise LedgerError("a receipt needs a job id and a payment hash")
        if not isinstance(amount_msat, int) or amount_msat < 0:
            raise LedgerError("amount_msat must be a non-negative integer")
        t = time.time() if now is None else now
        payment_hash = payment_hash.lower()
        try:
            with self._tx() as db:
                # two lookups, not one with OR: SQLite cannot use the partial unique indexes for
                # an OR of both and scanned every receipt ever written, on each payment
                prior = (self._one(db, "job_id = ? AND status != 'failed'", (job_id,))
                         or self._one(db, "payment_hash = ? AND status != 'failed'", (payment_hash,)))
                if prior is not None:
                    what = "job" if prior.job_id == job_id else "invoice"
                    raise PaymentRefused(ALREADY_PAID, f"this {what} already has a {prior.status} payment "
                                                       f"(receipt {prior.id}, hash {prior.payment_hash[:16]}…)")
                if limits is not None:
                    if limits.daily_msat is not None:
                        spent = self._spent(db, since=utc_day_start(t))
                        if spent + amount_msat > limits.daily_msat:
                            raise PaymentRefused(ABOVE_BUDGET, f"{amount_msat} msat would exceed the daily budget "
                                                               f"({spent} of {limits.daily_msat} msat spent today)")
                    if limits.session_msat is not None:
                        spent = self._spent(db, session_id=limits.session_id or session_id)
                        if spent + amount_msat > limits.session_msat:
                            raise PaymentRefused(ABOVE_BUDGET, f"{amount_msat} msat would exceed the session budget "
                                                               f"({spent} of {limits.session_msat} msat spent)")
                if self._lease is None:
                    self._lease = OwnerLease(self.path)
                cur = db.execute(
                    "INSERT INTO receipts(job_id, provider, payment_hash, amount_msat, bolt11, status, session_id,"
                    " created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (job_id, provider, payment_hash, amount_msat, bolt11, session_id, t, t, self._lease.owner))
                receipt = self._one(db, "id = ?", (cur.lastrowid,))
        except sqlite3.IntegrityError:  # pragma: no cover - the SELECT above runs under the same write lock
            raise PaymentRefused(ALREADY_PAID, "this job or invoice already has a payment") from None
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"could not record the payment intent: {exc}") from None
        assert receipt is not None
        log.info("payment intent job=%s hash=%s amount_msat=%d", job_id[:12], payment_hash[:12], amount_msat)
        return receipt

    def mark_paid(self, payment_hash: str, *, preimage: str | None, fee_msat: int = 0,
                  now: float | None = None) -> Receipt:
        """Close the pending receipt for `payment_hash` as paid (idempotent if already paid)."""
        t = time.time() if now is None else now
        payment_hash = payment_hash.lower()
        try:
            with self._tx() as db:
                # a failed receipt comes back when money moved after all: resurrect it rather than lose it
                r = self._for_hash(db, payment_hash)
                if r.status == PAID:
                    return r
                db.execute("UPDATE receipts SET status='paid', preimage=?, fee_msat=?, paid_at=?, updated_at=?, error=NULL"
                           " WHERE id = ?", (preimage, int(fee_msat), t, t, r.id))
                out = self._one(db, "id = ?", (r.id,))
        except sqlite3.Error as exc:
            raise LedgerError(f"could not mark the payment paid: {exc}") from None
        assert out is not None
        return out

    def mark_failed(self, payment_hash: str, error: str, *, now: float | None = None) -> Receipt:
        """Close the pending receipt as failed. Only call it when the wallet is sure no money moved."""
        t = time.time() if now is None else now
        payment_hash = payment_hash.lower()
        try:
            with self._tx() as db:
                r = self._for_hash(db, payment_hash)
                if r.status == FAILED:
                    return r
                if r.status == PAID:
                    raise LedgerError(f"receipt {r.id} is already paid; it cannot be marked failed")
                db.execute("UPDATE receipts SET status='failed', error=?, updated_at=? WHERE id = ?",
                           (str(error)[:500], t, r.id))
                out = self._one(db, "id = ?", (r.id,))
        except sqlite3.Error as exc:
            raise LedgerError(f"could not mark the payment failed: {exc}") from None
        assert out is not None
        return out

    # -- refunds and results (docs/PROTOCOL.md, "Refunds") ----------------------------------------
    def _set_where(self, sets: str, args: tuple, where: str, wargs: tuple, what: str) -> Receipt | None:
        try:
            with self._tx() as db:
                r = self._one(db, where, wargs)
                if r is None:
                    return None
                db.execute(f"UPDATE receipts SET {sets}, updated_at = ? WHERE id = ?", (*args, time.time(), r.id))
                return self._one(db, "id = ?", (r.id,))
        except sqlite3.Error as exc:
            raise LedgerError(f"could not record {what}: {exc}") from None

    def mark_refund_requested(self, payment_hash: str, refund_hash: str) -> Receipt | None:
        """Before a refund request goes out: the hash of our refund invoice, so a restart can
        check whether the money came back. Only a paid receipt with no refund yet qualifies."""
        return self._set_where("refund_status = 'requested', refund_hash = ?", (refund_hash.lower(),),
                               "payment_hash = ? AND status = 'paid' AND COALESCE(refund_status, '') != 'refunded'",
                               (payment_hash.lower(),), "the refund request")

    def mark_refunded(self, payment_hash: str) -> Receipt | None:
        """The refund invoice settled: the receipt's amount came back (the routing fee does not)."""
        return self._set_where("refund_status = 'refunded', refund_msat = amount_msat", (),
                               "payment_hash = ? AND status = 'paid' AND refund_status = 'requested'",
                               (payment_hash.lower(),), "the refund")

    def mark_result(self, job_id: str, result_event_id: str) -> Receipt | None:
        """The paid job's result arrived (recovery fetches results for receipts without one)."""
        return self._set_where("result_event_id = ?", (result_event_id,),
                               "job_id = ? AND status != 'failed'", (job_id,), "the result")

    async def mark_refund_requested_async(self, payment_hash: str, refund_hash: str) -> Receipt | None:
        return await self._on_writer(self.mark_refund_requested, payment_hash, refund_hash)

    async def mark_refunded_async(self, payment_hash: str) -> Receipt | None:
        return await self._on_writer(self.mark_refunded, payment_hash)

    async def mark_result_async(self, job_id: str, result_event_id: str) -> Receipt | None:
        return await self._on_writer(self.mark_result, job_id, result_event_id)

    def mark_result_soon(self, job_id: str, result_event_id: str) -> None:
        """`mark_result` queued on the writer thread, not waited for (from the event loop).

        Why: it is bookkeeping nothing waits on, and waiting cost every paid ask one more
        commit (an fsync) before it returned. It is committed with the next batch, or at
        `close()`; a crash before that leaves the receipt to `recover`, which fetches the
        result again. A failure is logged (at DEBUG: the same as a crash before it)."""
        try:
            fut = self._submit(functools.partial(self.mark_result, job_id, result_event_id), synced=False)
        except (RuntimeError, LedgerError):  # closed: as a crash before the write
            return
        fut.add_done_callback(_log_write_failure)

    def refunds_requested(self) -> list[Receipt]:
        """Receipts whose refund was asked for and has not been seen arriving yet."""
        return [Receipt(*r) for r in self._query(
            f"SELECT {_COLS} FROM receipts WHERE status = 'paid' AND refund_status = 'requested' ORDER BY id")]

    def paid_without_result(self, *, since: float | None = None) -> list[Receipt]:
        """Paid receipts with neither a result nor a refund: what a restarted client should chase."""
        sql = (f"SELECT {_COLS} FROM receipts WHERE status = 'paid' AND result_event_id IS NULL"
               " AND COALESCE(refund_status, '') != 'refunded'")
        args: tuple = ()
        if since is not None:
            sql += " AND created_at >= ?"
            args = (since,)
        return [Receipt(*r) for r in self._query(sql + " ORDER BY id", args)]

    # -- reads -------------------------------------------------------------------------------
    def get(self, payment_hash: str) -> Receipt | None:
        """The live (pending/paid) receipt for a hash, else the latest failed one, else None."""
        rows = self._query(f"SELECT {_COLS} FROM receipts WHERE payment_hash = ? "
                           "ORDER BY (status = 'failed'), id DESC LIMIT 1", (payment_hash.lower(),))
        return Receipt(*rows[0]) if rows else None

    def has_paid(self, payment_hash: str) -> bool:
        """True when a payment for this hash was made OR may have been made (pending): don't pay it again."""
        return bool(self._query("SELECT 1 FROM receipts WHERE payment_hash = ? AND status != 'failed' LIMIT 1",
                                (payment_hash.lower(),)))

    def intent_for_job(self, job_id: str) -> Receipt | None:
        """The job's pending or paid receipt (at most one exists), or None."""
        rows = self._query(f"SELECT {_COLS} FROM receipts WHERE job_id = ? AND status != 'failed'", (job_id,))
        return Receipt(*rows[0]) if rows else None

    def pending(self) -> list[Receipt]:
        return [Receipt(*r) for r in self._query(f"SELECT {_COLS} FROM receipts WHERE status = 'pending' ORDER BY id")]

    def receipts(self, *, limit: int | None = None, include_failed: bool = True) -> list[Receipt]:
        """Newest first."""
        sql = f"SELECT {_COLS} FROM receipts"
        if not include_failed:
            sql += " WHERE status != 'failed'"
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Receipt(*r) for r in self._query(sql)]

    def __iter__(self) -> Iterator[Receipt]:
        return iter(self.receipts())

    def spent_msat(self, *, since: float | None = None, session_id: str | None = None) -> int:
        """amount + fee of pending and paid receipts, optionally since a time / for a session."""
        with self._rlock:
            try:
                return self._spent(self._rdb, since=since, session_id=session_id)
            except sqlite3.Error as exc:
                raise LedgerError(f"receipts ledger read failed: {exc}") from None

    def spent_today_msat(self, now: float | None = None) -> int:
        return self.spent_msat(since=utc_day_start(now))

    def totals_by_provider(self) -> dict[str, dict[str, int]]:
        """provider -> {"count", "amount_msat", "fee_msat"} over paid receipts (pending ones are
        not known to be paid yet: `pending_msat()`)."""
        rows = self._query("SELECT provider, COUNT(*), SUM(amount_msat), SUM(fee_msat) FROM receipts "
                           "WHERE status = 'paid' GROUP BY provider ORDER BY SUM(amount_msat) DESC")
        return {p: {"count": c, "amount_msat": a, "fee_msat": f} for p, c, a, f in rows}

    def totals_by_day(self) -> dict[str, dict[str, int]]:
        """UTC day (YYYY-MM-DD) -> {"count", "amount_msat", "fee_msat"} over paid receipts."""
        rows = self._query("SELECT date(created_at, 'unixepoch'), COUNT(*), SUM(amount_msat), SUM(fee_msat) "
                           "FROM receipts WHERE status = 'paid' GROUP BY 1 ORDER BY 1")
        return {d: {"count": c, "amount_msat": a, "fee_msat": f} for d, c, a, f in rows}

    def paid_msat(self) -> int:
        """amount + fee of the paid receipts only (what surely left the wallet)."""
        return int(self._query("SELECT COALESCE(SUM(amount_msat + fee_msat), 0) FROM receipts "
                               "WHERE status = 'paid'")[0][0])

    def pending_msat(self) -> int:
        """amount + fee of payments whose outcome is not known yet (they count against budgets)."""
        return int(self._query("SELECT COALESCE(SUM(amount_msat + fee_msat), 0) FROM receipts "
                               "WHERE status = 'pending'")[0][0])

    # -- crash recovery ------------------------------------------------------------------------
    def orphaned(self) -> list[Receipt]:
        """Pending receipts whose writer is gone (its lease is free): the only ones recovery may settle."""
        mine = self._lease.owner if self._lease is not None else None
        return [r for r in self.pending() if not owner_alive(self.path, r.owner, mine=mine)]

    async def recover(self, wallet: "Wallet") -> list[Receipt]:
        """Settle receipts a dead process left 'pending' by asking the wallet.

        Only intents whose owner is gone are touched (`orphaned`): a live process sharing this
        ledger may be paying its intent right now, and the wallet's "no payment for this hash"
        then means "not yet", not "failed". For an orphan: SETTLED -> paid (with preimage and
        fee when the wallet offers `payment_details`); FAILED/EXPIRED -> failed (its owner can
        no longer pay it); PENDING or a wallet error -> left pending for a later call.
        Returns the receipts it changed."""
        changed: list[Receipt] = []
        for r in self.orphaned():
            try:
                state = await wallet.lookup_payment(r.payment_hash)
            except Exception as exc:  # any wallet trouble: try again later, never guess
                log.warning("recover: cannot look up payment %s: %s", r.payment_hash[:12], type(exc).__name__)
                continue
            settled = await self.settle_unknown(wallet, r.payment_hash, state,
                                                failed_reason="recovered: the wallet has no payment for this hash")
            if settled is not None:
                changed.append(settled)
                log.info("recover: receipt %d (job %s) was %s", r.id, r.job_id[:12],
                         "paid" if settled.status == "paid" else "not paid")
        return changed

    async def settle_unknown(self, wallet: "Wallet", payment_hash: str, state: "InvoiceState", *,
                             failed_reason: str | None) -> Receipt | None:
        """Close a pending receipt whose payment outcome was unknown, from what the wallet's
        lookup_payment said (`state`) — the one place both the paying customer (Budget.pay,
        after a timeout) and crash recovery (recover) do it.

        SETTLED -> paid, with preimage and fee when the wallet offers payment_details;
        FAILED/EXPIRED -> failed with `failed_reason`, or left pending when that is None ("no
        payment" may still mean "not yet"); PENDING -> left pending. Returns the changed
        receipt, or None when nothing changed (also when someone settled it meanwhile)."""
        from wallet.base import InvoiceState, SupportsPaymentDetails  # local: keep pylon.customer.ledger importable without wallet side effects

        if state == InvoiceState.SETTLED:
            preimage, fee = None, 0
            if isinstance(wallet, SupportsPaymentDetails):
                try:
                    details = await wallet.payment_details(payment_hash)
                except Exception:  # the money moved: record it even without the proof
                    details = None
                if details is not None:
                    preimage, fee = details.preimage, details.fee_msat
            return await self.mark_paid_async(payment_hash, preimage=preimage, fee_msat=fee)
        if state in (InvoiceState.FAILED, InvoiceState.EXPIRED) and failed_reason is not None:
            try:
                return await self.mark_failed_async(payment_hash, failed_reason)
            except LedgerError as exc:  # settled meanwhile by someone else: theirs is the truth
                log.info("receipt for %s left as is: %s", payment_hash[:12], exc)
        return None
