"""Reputation from evidence: a local scoreboard built from this client's own history.

Strangers on an open market cannot be trusted on their word, but every job a client runs is
evidence about the provider that ran it: did it deliver, fail, stall, or take the money and
never deliver; how long until its first reply; how many tokens per second; what it cost.
`Scoreboard` keeps one row per (job, provider) outcome in PYLON_HOME/scores.sqlite and
derives a `ProviderScore` from them. Routing (pylon.customer.offers) breaks price ties with
it and `--route best|fastest` sorts by it; `pylon providers` shows it.

Why its own file rather than the receipts ledger or `pylon history`: the ledger holds money
records only (written before paying, never rewritten) and history is one row per ask, not
per provider that took part; a failover ask involves several providers.

The score, in [0, 1], is a smoothed success rate where taking the money and not delivering
weighs like five failures:

    score = (delivered + 1) / (delivered + failed + stalled + 5 * paid_not_delivered + 2)

so an unknown provider scores 0.5, one good job 0.67, one theft 0.14. Writes are buffered
and flushed every `flush_every` outcomes and on close, so a job never waits for an fsync
(reputation is advisory: losing the last few rows in a crash costs nothing). Reading is
incremental: our own outcomes are counted as they are recorded, and the file is read (its new
rows only) when another process or board has written to it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from pylon.errors import StorageError
from pylon.home import db_path, private_file

Outcome = Literal["delivered", "failed", "stalled", "paid_not_delivered"]
OUTCOMES: Final = ("delivered", "failed", "stalled", "paid_not_delivered")
THEFT_WEIGHT: Final = 5
log = logging.getLogger(__name__)

_RECENT: Final = 200  # rows per provider the medians look at
_OWN_IDS_MAX: Final = 10_000  # our rows remembered beyond the last read; then the file is read to forget them

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    outcome TEXT NOT NULL,          -- delivered | failed | stalled | paid_not_delivered
    first_reply_s REAL,             -- seconds from publishing to the provider's first event
    tokens INTEGER,                 -- completion tokens delivered
    tokens_per_s REAL,
    paid_msat INTEGER NOT NULL DEFAULT 0,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_provider ON outcomes(provider, id);
"""


@dataclass(slots=True)
class ProviderScore:
    """What this client knows about one provider from its own jobs."""

    provider: str
    delivered: int = 0
    failed: int = 0
    stalled: int = 0
    paid_not_delivered: int = 0
    first_reply_s: float | None = None  # median
    tokens_per_s: float | None = None  # median
    paid_msat: int = 0  # total
    last_at: float | None = None

    @property
    def jobs(self) -> int:
        return self.delivered + self.failed + self.stalled + self.paid_not_delivered

    @property
    def score(self) -> float:
        bad = self.failed + self.stalled + THEFT_WEIGHT * self.paid_not_delivered
        return round((self.delivered + 1) / (self.delivered + bad + 2), 4)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "jobs": self.jobs, "score": self.score}


UNKNOWN_SCORE: Final = ProviderScore("").score  # 0.5


class Scoreboard:
    """Per-provider outcomes in SQLite (PYLON_HOME/scores.sqlite unless `path` is given)."""

    def __init__(self, path: Path | str | None = None, *, flush_every: int = 32, strict: bool = False) -> None:
        """`strict`: a file SQLite cannot use raises StorageError (`pylon providers`, which
        only reads it). Otherwise a customer asks on: one warning, then the scores of this
        process only (they are advice for choosing a provider, not a record of money)."""
        self.path = Path(path) if path is not None else db_path("scores")
        self.flush_every = flush_every
        self.strict = strict
        self._unusable = False  # the file failed once: in memory from then on
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._cache: dict[str, ProviderScore] | None = None  # the last snapshot scores() returned
        # every row up to id `_read_to`, folded in: counts per provider and their recent timings
        self._read_to = 0
        self._board: dict[str, ProviderScore] = {}
        self._replies: dict[str, deque[float]] = {}
        self._speeds: dict[str, deque[float]] = {}
        self._changed: set[str] = set()  # providers whose medians are stale
        self._own_ids: set[int] = set()  # rows we wrote beyond `_read_to` (already folded: skipped when read)
        self._version: int | None = None  # PRAGMA data_version at the last read (None: never read)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(private_file(self.path), check_same_thread=False, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def record(self, job_id: str, provider: str, outcome: Outcome, *, first_reply_s: float | None = None,
               tokens: int | None = None, tokens_per_s: float | None = None, paid_msat: int = 0,
               detail: str = "") -> None:
        """Note one provider's outcome for one job (buffered; see the module docstring). It
        counts in `scores()` at once: our own rows are folded in here, not read back."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        row = (time.time(), job_id, provider, outcome, first_reply_s, tokens, tokens_per_s, int(paid_msat), detail[:300])
        with self._lock:
            self._buffer.append(row)
            self._fold(provider, outcome, first_reply_s, tokens_per_s, row[7], row[0])
            self._cache = None
            if len(self._buffer) >= self.flush_every:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        if self._unusable:
            self._buffer.clear()
            return
        try:
            conn = self._db()
            with conn:
                for row in self._buffer:  # one by one: each row's id, so a later read skips our own rows
                    cur = conn.execute("INSERT INTO outcomes (at, job_id, provider, outcome, first_reply_s, tokens, "
                                       "tokens_per_s, paid_msat, detail) VALUES (?,?,?,?,?,?,?,?,?)", row)
                    if cur.lastrowid is not None:
                        self._own_ids.add(cur.lastrowid)
        except sqlite3.Error as exc:
            self._give_up(exc)
        self._buffer.clear()

    def _give_up(self, exc: sqlite3.Error) -> None:
        """The file cannot be used (corrupt, not SQLite, unwritable): StorageError when strict,
        else one warning and scores from this process only."""
        if self.strict:
            raise StorageError(f"cannot read the provider scores {self.path}: {exc}",
                               hint="move the file aside; scores start again from the next jobs") from None
        if not self._unusable:
            log.warning("provider scores %s unusable (%s): scoring from this session only; move the file "
                        "aside to keep scores again", self.path, exc)
        self._unusable = True
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _fold(self, provider: str, outcome: str, first_reply: float | None, tps: float | None, paid: int | None,
              at: float) -> None:
        """Count one outcome row into the running board."""
        s = self._board.get(provider)
        if s is None:
            s = self._board[provider] = ProviderScore(provider)
            self._replies[provider], self._speeds[provider] = deque(maxlen=_RECENT), deque(maxlen=_RECENT)
        setattr(s, outcome, getattr(s, outcome) + 1)
        s.paid_msat += paid or 0
        s.last_at = at if s.last_at is None else max(s.last_at, at)
        if first_reply is not None:
            self._replies[provider].append(first_reply)
        if tps is not None:
            self._speeds[provider].append(tps)
        self._changed.add(provider)

    def _others_wrote(self) -> bool:
        """Has another connection (another process, another board) written since we last read?
        `PRAGMA data_version` answers from shared memory; our own commits do not move it."""
        if self._unusable or (self._conn is None and not self.path.exists()):
            return False
        try:
            version = self._db().execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            self._give_up(exc)
            return False
        if version == self._version:
            return False
        self._version = version
        return True

    def scores(self) -> dict[str, ProviderScore]:
        """Every provider this client has evidence about (cached until the next record).

        Our own outcomes are folded in as they are recorded; the file is read only when another
        writer committed since the last read, and then only its new rows (a decision on a paid
        quote must neither flush nor re-read the whole file)."""
        with self._lock:
            others = self._others_wrote()
            if self._cache is not None and not others:
                return self._cache
            if (others or len(self._own_ids) > _OWN_IDS_MAX) and not self._unusable:
                try:
                    rows = self._db().execute(
                        "SELECT id, provider, outcome, first_reply_s, tokens_per_s, paid_msat, at FROM outcomes "
                        "WHERE id > ? ORDER BY id", (self._read_to,)).fetchall()
                except sqlite3.Error as exc:
                    self._give_up(exc)
                    rows = []
                own = self._own_ids
                for row_id, provider, outcome, first_reply, tps, paid, at in rows:
                    if row_id in own:
                        own.discard(row_id)
                    else:
                        self._fold(provider, outcome, first_reply, tps, paid, at)
                if rows:
                    self._read_to = rows[-1][0]
            for provider in self._changed:
                s, replies, speeds = self._board[provider], self._replies[provider], self._speeds[provider]
                if replies:
                    s.first_reply_s = round(statistics.median(replies), 4)
                if speeds:
                    s.tokens_per_s = round(statistics.median(speeds), 2)
            self._changed.clear()
            # a snapshot: a caller's dict does not change under it when later rows are folded in
            self._cache = {p: replace(s) for p, s in self._board.items()}
            return self._cache

    def score_of(self, provider: str) -> ProviderScore:
        return self.scores().get(provider) or ProviderScore(provider)

    def close(self) -> None:
        with self._lock:
            try:
                self._flush_locked()
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def __enter__(self) -> "Scoreboard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
