"""The provider's job state in SQLite (WAL) under PYLON_HOME: never lose a job, never run one twice.

Every state change is committed *before* the provider acts on it:

    seen -> quoted -> [awaiting_payment -> paid] -> processing -> done
       \\-----(a free job, or one paid for the key)---/
                 \\-> error / cancelled (from any live state)

(Paid for the key, pylon.jobs.keyed: the job runs first and its sealed result, stored with
its invoice, is the quote; `paid_at` is set once the key is bought, after `done`.)

* `record_seen` inserts the request keyed by its event id with INSERT OR IGNORE, so the same
  request delivered by several relays, or again after a reconnect or a restart, is taken
  once.
* Each transition is one conditional UPDATE (`WHERE status IN (allowed sources)`) whose row
  count says whether this caller won it; `claim_processing` is the only way into
  `processing` and bumps `attempts`, so a job can never be run by two tasks.
* On restart, `recover()` sorts out what the dead process left behind: a job that was
  `processing` with `result_published = 1` is simply `done`; one without a published result
  is run again exactly once (`attempts` < 2), after that it is an `error`; one whose signed
  result was stored (`result_json`) but not confirmed published is republished, not re-run.
  Jobs still `seen` or `quoted` are handed back to be processed; `awaiting_payment`/`paid` are left to the
  payments step, which owns those states (the invoice, payment hash and amount columns are
  here already so it needs no migration).
* Several worker processes may share one store (`pylon serve --workers N`, each a JobStore
  with `owner=` its worker id, pylon.provider.claims): `record_seen` is the claim (the worker
  whose insert lands owns the job, `claimed_by`), recovery and the resume lists see only the
  worker's own rows, and `take_over` moves the rows of a worker that has exited (its pid is
  gone; never on a timeout, so a slow worker's job is not run twice) to a live one, in one
  write transaction, so exactly one worker resumes them: jobs, payments being waited for, keys
  still for sale and refunds whose outcome is unknown. The `workers` table lists the workers
  that have used the store.
* `last_request_created_at` gives the `since` for the next subscription, so requests sent
  while the provider was down are picked up.

Synchronous sqlite3 on purpose: each statement is a few tens of microseconds with
`synchronous=NORMAL` in WAL mode (durable across a process crash, which is the failure that
matters here), cheaper than a thread hop per write. What did stall the event loop was
SQLite's automatic WAL checkpoint, which the committing statement runs itself every ~1000
pages, fsyncs included (5-10 ms every ~100 jobs). So automatic checkpoints are off on this
connection and a small daemon thread with its own connection runs a PASSIVE checkpoint every
`CHECKPOINT_INTERVAL_S` instead; it never blocks a writer, and the WAL stays short. Commits
are exactly as durable as before (checkpointing only copies committed pages into the main file).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pylon.errors import StorageError
from pylon.provider.claims import worker_alive
from pylon.provider.counters import install as install_counters
from pylon.home import db_path as home_db_path
from pylon.home import private_file

STATES = ("seen", "quoted", "awaiting_payment", "paid", "processing", "done", "error", "cancelled")
TERMINAL = frozenset({"done", "error", "cancelled"})
LIVE = frozenset(STATES) - TERMINAL

#: state -> the states it may be entered from
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "seen": frozenset(),
    "quoted": frozenset({"seen"}),
    "awaiting_payment": frozenset({"quoted"}),
    "paid": frozenset({"awaiting_payment"}),
    "processing": frozenset({"seen", "quoted", "paid"}),  # only via claim_processing (counts attempts)
    "done": frozenset({"processing"}),
    "error": LIVE,
    "cancelled": LIVE,
}

MAX_ATTEMPTS = 2  # the first run, plus one re-run after a crash
CHECKPOINT_INTERVAL_S = 0.5
RETENTION_S = 7 * 86400  # finished jobs (done/error/cancelled) are pruned this long after their last change
PRUNE_INTERVAL_S = 300.0
PRUNE_BATCH = 500  # rows per DELETE: each statement holds the write lock for milliseconds only
WAL_SIZE_LIMIT = 4 << 20  # the WAL file is cut back to this after each reset (it never shrinks by itself)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    request_id        TEXT PRIMARY KEY,
    customer          TEXT NOT NULL,
    request_created_at INTEGER NOT NULL,
    request_json      TEXT NOT NULL,
    status            TEXT NOT NULL,
    model             TEXT,
    encrypted         INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0,
    amount_msat       INTEGER,
    invoice           TEXT,
    payment_hash      TEXT,
    invoice_expires_at INTEGER,
    paid_at           REAL,
    result_published  INTEGER NOT NULL DEFAULT 0,
    result_event_id   TEXT,
    result_json       TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    error             TEXT,
    seen_at           REAL NOT NULL,
    updated_at        REAL NOT NULL,
    refund_msat       INTEGER,
    refund_status     TEXT,
    refund_hash       TEXT,
    refunded_at       REAL,
    claimed_by        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (worker_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, started_at REAL NOT NULL);
"""


# Partial: a free job has no payment hash and a lone provider's jobs no worker id, so neither
# index takes an entry for them (the full indexes of earlier stores cost ~37 us of a free job's
# ~220 us of writes); every lookup by hash or by worker still finds them indexed.
_PARTIAL_INDEXES = """
DROP INDEX IF EXISTS jobs_payment_hash;
DROP INDEX IF EXISTS jobs_claimed_by;
CREATE INDEX IF NOT EXISTS jobs_by_payment_hash ON jobs(payment_hash) WHERE payment_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_worker ON jobs(claimed_by) WHERE claimed_by IS NOT NULL;
"""


@dataclass(slots=True)
class JobRow:
    """One job as stored."""

    request_id: str
    customer: str
    request_created_at: int
    request_json: str
    status: str
    model: str | None
    encrypted: bool
    attempts: int
    amount_msat: int | None
    invoice: str | None
    payment_hash: str | None
    invoice_expires_at: int | None
    paid_at: float | None
    result_published: bool
    result_event_id: str | None
    result_json: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    seen_at: float
    updated_at: float
    refund_msat: int | None = None   # what a failed paid job offers back (docs/PROTOCOL.md, "Refunds")
    refund_status: str | None = None  # None | 'offered' | 'paying' | 'refunded'
    refund_hash: str | None = None    # payment hash of the customer's refund invoice we pay
    refunded_at: float | None = None
    claimed_by: str | None = None     # the worker running it (`pylon serve --workers`, pylon.provider.claims)


@dataclass(slots=True)
class Takeover:
    """What a worker took over from workers that exited (`JobStore.take_over`)."""

    rows: list[JobRow]                    # unfinished jobs to resume (as `recover()` returns them)
    key_invoices: list[tuple[str, str, int]]  # delivered key-mode jobs whose key may still be bought
    refunds_paying: bool                  # a refund whose payment outcome is unknown (RefundDesk.resume)
    ids: list[str]                        # every row taken that needs care (open hold invoices: keysale)


_COLUMNS = [f for f in JobRow.__slots__]  # type: ignore[attr-defined]
_ADDED = (("refund_msat", "INTEGER"), ("refund_status", "TEXT"), ("refund_hash", "TEXT"), ("refunded_at", "REAL"),
          ("claimed_by", "TEXT"))
#: rows a worker must look after besides unfinished jobs: a key still for sale, a refund being paid
_NEEDS_CARE = ("(status IN ('seen','quoted','awaiting_payment','paid','processing') OR refund_status = 'paying'"
               " OR (status = 'done' AND payment_hash IS NOT NULL AND paid_at IS NULL))")
_SETTABLE = frozenset({"model", "amount_msat", "invoice", "payment_hash", "invoice_expires_at", "paid_at",
                       "result_event_id", "prompt_tokens", "completion_tokens", "error", "encrypted"})


class JobStore:
    """SQLite-backed job states for one provider identity."""

    def __init__(self, path: Path | str | None = None, *, retention_s: float = RETENTION_S,
                 owner: str | None = None) -> None:
        """`owner`: this worker's id when several processes share the store (`pylon serve
        --workers`, pylon.provider.claims): new jobs are claimed for it, start-up recovery and
        the resume lists see only its own jobs (after taking over those of exited workers)."""
        self.path = Path(path) if path is not None else home_db_path("provider")
        self.owner = owner
        try:  # a corrupt, foreign or unwritable file is the user's to fix: one StorageError line
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(private_file(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            _enable_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, decl in _ADDED:
                if name not in have:  # a job store from before refunds (or workers)
                    try:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
                    except sqlite3.OperationalError as exc:  # another worker process added it just now
                        if "duplicate column" not in str(exc):
                            raise
            self._db.executescript(_PARTIAL_INDEXES)
            install_counters(self._db)  # lifetime outcome counters for /metrics (pylon.provider.counters)
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # see the module docstring
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the provider's job store {self.path}: {exc}",
                               hint="move the file away (the jobs in it are forgotten) or use another "
                                    "PYLON_HOME") from exc
        self._sanitize_cursor()
        self._last_seen: int | None = self.last_request_created_at()
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(target=_checkpoint_loop,
                                              args=(self.path, self._stop_checkpoints, retention_s),
                                              name="pylon-jobstore-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer.is_alive() and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(timeout=5)
        self._db.close()  # the last connection to close checkpoints what is left

    def __del__(self) -> None:
        stop = getattr(self, "_stop_checkpoints", None)
        if stop is not None:
            stop.set()

    def __enter__(self) -> "JobStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------
    def record_seen(self, request_id: str, customer: str, created_at: int, request_json: str,
                    *, model: str | None = None, encrypted: bool = False) -> bool:
        """Insert a new request as `seen`; False if it was already known (any state).

        With several workers on one store this is the claim: every worker sees every request,
        the one whose insert lands owns (`claimed_by`) and runs the job, the others get False."""
        now = time.time()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO jobs (request_id, customer, request_created_at, request_json, status, model,"
            " encrypted, seen_at, updated_at, claimed_by) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (request_id, customer, int(created_at), request_json, "seen", model, int(encrypted), now, now,
             self.owner),
        )
        self._bump_last_seen(created_at)
        return cur.rowcount == 1

    def _bump_last_seen(self, created_at: int) -> None:
        # never past now: a stranger's request dated 15 minutes ahead (relays accept that much)
        # would otherwise make the next start subscribe from the future and miss every request
        created_at = min(int(created_at), int(time.time()))
        if self._last_seen is not None and created_at <= self._last_seen:
            return  # most requests share a second: skip the write
        self._last_seen = int(created_at)
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES('last_request_created_at', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
            (str(int(created_at)),),
        )

    def transition(self, request_id: str, to: str, **fields: object) -> bool:
        """Move a job to `to` if the state machine allows it from its current state.

        Extra columns (model, amount_msat, invoice, payment_hash, error, …) are written in
        the same statement. Returns False (and changes nothing) when the job is unknown or
        in a state `to` may not follow.
        """
        if to not in ALLOWED_FROM:
            raise ValueError(f"unknown job state {to!r}")
        if to == "processing":
            raise ValueError("enter 'processing' with claim_processing(), which counts attempts")
        bad = set(fields) - _SETTABLE
        if bad:
            raise ValueError(f"cannot set {sorted(bad)} in a transition")
        sources = ALLOWED_FROM[to]
        if not sources:
            return False
        sets = ["status = ?", "updated_at = ?"] + [f"{k} = ?" for k in fields]
        params: list[object] = [to, time.time(), *fields.values(), request_id, *sources]
        placeholders = ",".join("?" * len(sources))
        cur = self._db.execute(
            f"UPDATE jobs SET {', '.join(sets)} WHERE request_id = ? AND status IN ({placeholders})", params
        )
        return cur.rowcount == 1

    def claim_processing(self, request_id: str, *, rerun: bool = False, amount_msat: int | None = None,
                         model: str | None = None) -> bool:
        """Enter `processing` (and count an attempt); False if not ours to run.

        A fresh claim comes from seen/quoted/paid. `rerun=True` (restart recovery only)
        re-claims a job left `processing` without a published result, once.
        """
        sources = ("processing",) if rerun else ("seen", "quoted", "paid")
        placeholders = ",".join("?" * len(sources))
        # a free job goes from seen straight here: its price (0) and model are set in this write
        cur = self._db.execute(
            f"UPDATE jobs SET status = 'processing', attempts = attempts + 1, updated_at = ?, "
            f"amount_msat = COALESCE(?, amount_msat), model = COALESCE(?, model) "
            f"WHERE request_id = ? AND status IN ({placeholders}) AND result_published = 0 AND attempts < ?",
            (time.time(), amount_msat, model, request_id, *sources, MAX_ATTEMPTS),
        )
        return cur.rowcount == 1

    def mark_result_ready(self, request_id: str, result_json: str,
                          key_invoice: tuple[str, str, int] | None = None) -> None:
        """Keep the signed result before publishing it, so a restart republishes the very same
        event (same id: relays dedupe it) instead of running the job again.

        `key_invoice` (bolt11, payment hash, expiry) for a result sealed for pay for the key
        (pylon.jobs.keyed): the invoice whose preimage opens it, kept in the same write."""
        if key_invoice is None:
            self._db.execute("UPDATE jobs SET result_json = ?, updated_at = ? WHERE request_id = ?",
                             (result_json, time.time(), request_id))
            return
        bolt11, payment_hash, expires_at = key_invoice
        self._db.execute(
            "UPDATE jobs SET result_json = ?, invoice = ?, payment_hash = ?, invoice_expires_at = ?, updated_at = ?"
            " WHERE request_id = ?", (result_json, bolt11, payment_hash, int(expires_at), time.time(), request_id))

    def mark_result_published(self, request_id: str, result_event_id: str, *, prompt_tokens: int | None,
                              completion_tokens: int | None, amount_msat: int | None = None) -> None:
        """Record the published result and finish the job in one statement."""
        self._db.execute(
            "UPDATE jobs SET result_published = 1, result_event_id = ?, prompt_tokens = ?, completion_tokens = ?,"
            " amount_msat = COALESCE(?, amount_msat), status = 'done', updated_at = ? WHERE request_id = ?",
            (result_event_id, prompt_tokens, completion_tokens, amount_msat, time.time(), request_id),
        )

    # -- pay for the key (pylon.jobs.keyed): the job is `done` before it is paid ------------
    def mark_key_paid(self, request_id: str, paid_at: float | None = None) -> bool:
        """The key was bought: the delivered job is now paid (once; counters follow by trigger)."""
        cur = self._db.execute(
            "UPDATE jobs SET paid_at = ?, updated_at = ? WHERE request_id = ? AND paid_at IS NULL"
            " AND payment_hash IS NOT NULL",
            (paid_at or time.time(), time.time(), request_id))
        return cur.rowcount == 1

    def unpaid_key_invoices(self, now: float | None = None) -> list[tuple[str, str, int]]:
        """(request id, payment hash, expiry) of delivered key-mode jobs still waiting to be bought."""
        rows = self._db.execute(
            "SELECT request_id, payment_hash, invoice_expires_at FROM jobs WHERE status = 'done'"
            " AND result_published = 1 AND payment_hash IS NOT NULL AND paid_at IS NULL AND invoice_expires_at > ?"
            + self._own_sql, (int(now if now is not None else time.time()), *self._own)).fetchall()
        return [(r[0], r[1], int(r[2])) for r in rows]

    def recover(self) -> list[JobRow]:
        """After a restart: settle what the last process left and return jobs to (re)run.

        Returns rows left in `processing` (re-run them via `claim_processing(rerun=True)`,
        or republish `result_json` when set) plus rows still `seen`/`quoted` (never
        started); oldest first.
        """
        if self.owner is not None:  # a worker: register, take over what exited workers left
            self._db.execute("INSERT OR REPLACE INTO workers(worker_id, pid, started_at) VALUES (?,?,?)",
                             (self.owner, _pid_of(self.owner), time.time()))
            self._adopt(unowned=True)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._settle(self._own_sql, self._own)
        rows = self.jobs_in(("processing", "seen", "quoted"))
        return sorted(rows, key=lambda r: (r.request_created_at, r.seen_at))

    def _settle(self, where: str, params: tuple) -> None:
        """What a dead process left `processing`: done when its result was published, an error
        when it was interrupted twice (only rows matching `where`, an `AND ...` fragment)."""
        now = time.time()
        self._db.execute(
            "UPDATE jobs SET status = 'done', updated_at = ? WHERE status = 'processing' AND result_published = 1"
            + where, (now, *params))
        self._db.execute(
            "UPDATE jobs SET status = 'error', error = 'interrupted twice by provider restarts', updated_at = ?"
            " WHERE status = 'processing' AND attempts >= ? AND result_json IS NULL" + where,
            (now, MAX_ATTEMPTS, *params))

    # -- several workers on one store (pylon.provider.claims, pylon.provider.workers) --------
    @property
    def _own_sql(self) -> str:
        return " AND claimed_by = ?" if self.owner is not None else ""

    @property
    def _own(self) -> tuple[str, ...]:
        return (self.owner,) if self.owner is not None else ()

    def _adopt(self, *, unowned: bool = False) -> list[str]:
        """Claim every row of the workers that have exited (and, with `unowned`, the rows a
        single-process provider left that still need care); returns the ids of the rows taken
        that need care. One worker wins each dead worker: the claim is one write transaction."""
        assert self.owner is not None
        others = [r[0] for r in self._db.execute("SELECT worker_id FROM workers WHERE worker_id != ?", (self.owner,))]
        if not any(not worker_alive(w) for w in others) and not unowned:
            return []  # the usual case: everyone alive, no write lock taken
        taken: list[str] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # re-read under the lock: another worker may have won
            others = [r[0] for r in self._db.execute("SELECT worker_id FROM workers WHERE worker_id != ?",
                                                     (self.owner,))]
            for dead in (w for w in others if not worker_alive(w)):
                taken += [r[0] for r in self._db.execute(
                    f"UPDATE jobs SET claimed_by = ? WHERE claimed_by = ? AND {_NEEDS_CARE} RETURNING request_id",
                    (self.owner, dead))]
                self._db.execute("UPDATE jobs SET claimed_by = ? WHERE claimed_by = ?", (self.owner, dead))
                self._db.execute("DELETE FROM workers WHERE worker_id = ?", (dead,))
                log.info("worker %s took over the jobs of exited worker %s", self.owner, dead)
            if unowned:
                taken += [r[0] for r in self._db.execute(
                    f"UPDATE jobs SET claimed_by = ? WHERE claimed_by IS NULL AND {_NEEDS_CARE} RETURNING request_id",
                    (self.owner,))]
        return taken

    def take_over(self) -> Takeover | None:
        """A running worker's periodic check: the jobs of workers that exited since, settled as
        `recover()` settles a restart's, or None when every other worker is alive."""
        if self.owner is None:
            return None
        taken = self._adopt()
        if not taken:
            return None
        marks = ",".join("?" * len(taken))
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._settle(f" AND request_id IN ({marks})", tuple(taken))
        rows = [_row(r) for r in self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE request_id IN ({marks})", taken).fetchall()]
        now = int(time.time())
        live = sorted((r for r in rows if r.status in LIVE), key=lambda r: (r.request_created_at, r.seen_at))
        keys = [(r.request_id, r.payment_hash, r.invoice_expires_at) for r in rows
                if r.status == "done" and r.result_published and r.payment_hash and r.paid_at is None
                and r.invoice_expires_at is not None and r.invoice_expires_at > now]
        return Takeover(rows=live, key_invoices=keys, refunds_paying=any(r.refund_status == "paying" for r in rows),
                        ids=taken)

    # -- refunds (pylon.provider.refunds) ----------------------------------------------------
    def offer_refund(self, request_id: str, amount_msat: int) -> bool:
        """A paid job failed: record that `amount_msat` is owed back (before the `error` says so)."""
        cur = self._db.execute(
            "UPDATE jobs SET refund_status = 'offered', refund_msat = ?, updated_at = ? WHERE request_id = ?"
            " AND paid_at IS NOT NULL AND refund_status IS NULL", (int(amount_msat), time.time(), request_id))
        return cur.rowcount == 1

    def claim_refund(self, request_id: str, customer: str, refund_hash: str) -> bool:
        """Take the job's refund for paying (exactly once per job: one conditional UPDATE wins)."""
        cur = self._db.execute(
            "UPDATE jobs SET refund_status = 'paying', refund_hash = ?, updated_at = ?,"
            " claimed_by = COALESCE(?, claimed_by) WHERE request_id = ?"
            " AND customer = ? AND status = 'error' AND refund_status = 'offered'",
            (refund_hash.lower(), time.time(), self.owner, request_id, customer))
        return cur.rowcount == 1

    def finish_refund(self, request_id: str, *, paid: bool) -> None:
        """The wallet answered: 'refunded', or back to 'offered' when no money moved."""
        if paid:
            self._db.execute("UPDATE jobs SET refund_status = 'refunded', refunded_at = ?, updated_at = ?"
                             " WHERE request_id = ? AND refund_status = 'paying'", (time.time(), time.time(), request_id))
        else:
            self._db.execute("UPDATE jobs SET refund_status = 'offered', refund_hash = NULL, updated_at = ?"
                             " WHERE request_id = ? AND refund_status = 'paying'", (time.time(), request_id))

    def refunds_in(self, status: str) -> list[JobRow]:
        cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE refund_status = ?" + self._own_sql,
                               (status, *self._own))
        return [_row(r) for r in cur.fetchall()]

    # -- reads ---------------------------------------------------------------------------
    def get(self, request_id: str) -> JobRow | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        return _row(row) if row else None

    def status(self, request_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        return row[0] if row else None

    def jobs_in(self, states: Iterable[str]) -> list[JobRow]:
        """Rows in `states` (a worker's own only, when the store has an owner)."""
        states = list(states)
        placeholders = ",".join("?" * len(states))
        cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status IN ({placeholders})"
                               + self._own_sql, [*states, *self._own])
        return [_row(r) for r in cur.fetchall()]

    def by_payment_hash(self, payment_hash: str) -> JobRow | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE payment_hash = ?", (payment_hash,)
        ).fetchone()
        return _row(row) if row else None

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

    def returning_customers(self, limit: int = 100_000) -> list[str]:
        """Customers this provider has served (a `done` job still in the store), newest last."""
        rows = self._db.execute(
            "SELECT customer FROM jobs WHERE status = 'done' GROUP BY customer ORDER BY MAX(updated_at) LIMIT ?",
            (limit,)).fetchall()
        return [r[0] for r in rows]

    def prune(self, retention_s: float = RETENTION_S) -> int:
        """Delete finished jobs older than `retention_s` (see `prune_finished`)."""
        return prune_finished(self._db, retention_s)

    def last_request_created_at(self) -> int | None:
        """The resume cursor, never later than now (see `_sanitize_cursor`)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_request_created_at'").fetchone()
        if not row:
            return None
        try:
            value = int(row[0])
        except (TypeError, ValueError):
            return None
        return max(0, min(value, int(time.time())))

    def _sanitize_cursor(self) -> None:
        """At start-up: a stored cursor in the future (written before cursors were clamped, or
        a clock that jumped back) is reset to now, so `MAX()` in the upsert cannot keep it."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_request_created_at'").fetchone()
        if not row:
            return
        now = int(time.time())
        try:
            bad = int(row[0]) > now
        except (TypeError, ValueError):
            bad = True
        if bad:
            log.warning("job store: resume cursor %s is in the future or unreadable; reset to now", row[0])
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_request_created_at'", (str(now),))

    def set_meta(self, key: str, value: object) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, json.dumps(value)))

    def get_meta(self, key: str) -> object | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None


def prune_finished(db: sqlite3.Connection, retention_s: float) -> int:
    """Delete done/error/cancelled jobs unchanged for `retention_s`, in small batches.

    Retention bounds the store (every request used to be kept forever). A pruned request
    that a relay delivers again would look new, so retention must stay far above the
    look-back of the provider's subscription (minutes); a refund still owed keeps its row."""
    cutoff = time.time() - retention_s
    total = 0
    while True:  # (JobStore adds the refund columns to an older store before anything prunes)
        cur = db.execute(
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE status IN ('done','error','cancelled')"
            " AND updated_at < ? AND (refund_status IS NULL OR refund_status = 'refunded') LIMIT ?)",
            (cutoff, PRUNE_BATCH))
        total += cur.rowcount
        if cur.rowcount < PRUNE_BATCH:
            return total


def _checkpoint_loop(path: Path, stop: threading.Event, retention_s: float = RETENTION_S) -> None:
    """Copy committed WAL pages into the database file off the event loop (PASSIVE: never
    waits for, nor blocks, the writer or readers); every PRUNE_INTERVAL_S, prune finished
    jobs past their retention."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        log.warning("job store checkpoints disabled: %s", exc)
        return
    try:
        db.execute("PRAGMA busy_timeout=1000")
        next_prune = time.monotonic()
        while not stop.wait(CHECKPOINT_INTERVAL_S):
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_INTERVAL_S
                try:
                    pruned = prune_finished(db, retention_s)
                    if pruned:
                        log.info("job store: pruned %d finished jobs older than %.0f s", pruned, retention_s)
                except sqlite3.Error as exc:
                    log.debug("job store prune skipped: %s", exc)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # e.g. busy: the next round tries again
                log.debug("job store checkpoint skipped: %s", exc)
    finally:
        db.close()


def _enable_wal(db: sqlite3.Connection, timeout_s: float = 5.0) -> None:
    """WAL mode, waiting out other processes: switching a new file to WAL needs it alone, and
    SQLite answers "locked" at once (no busy handler) while N workers open it together."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _pid_of(wid: str) -> int:
    try:
        return int(wid.split(":")[1])
    except (IndexError, ValueError):
        return 0


def _row(values: tuple) -> JobRow:
    row = JobRow(*values)
    row.encrypted = bool(row.encrypted)
    row.result_published = bool(row.result_published)
    return row
