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
(reputation is advisory: losing the last few rows in a crash costs nothing).
"""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from pylon.home import db_path, private_file

Outcome = Literal["delivered", "failed", "stalled", "paid_not_delivered"]
OUTCOMES: Final = ("delivered", "failed", "stalled", "paid_not_delivered")
THEFT_WEIGHT: Final = 5
_RECENT: Final = 200  # rows per provider the medians look at

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

    def __init__(self, path: Path | str | None = None, *, flush_every: int = 32) -> None:
        self.path = Path(path) if path is not None else db_path("scores")
        self.flush_every = flush_every
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._cache: dict[str, ProviderScore] | None = None  # the last snapshot scores() returned
        # every row up to id `_read_to`, folded in: counts per provider and their recent timings
        self._read_to = 0
        self._board: dict[str, ProviderScore] = {}
        self._replies: dict[str, deque[float]] = {}
        self._speeds: dict[str, deque[float]] = {}

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
        """Note one provider's outcome for one job (buffered; see the module docstring)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._lock:
            self._buffer.append((time.time(), job_id, provider, outcome, first_reply_s, tokens, tokens_per_s,
                                 int(paid_msat), detail[:300]))
            self._cache = None
            if len(self._buffer) >= self.flush_every:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        conn = self._db()
        with conn:
            conn.executemany("INSERT INTO outcomes (at, job_id, provider, outcome, first_reply_s, tokens, "
                             "tokens_per_s, paid_msat, detail) VALUES (?,?,?,?,?,?,?,?,?)", self._buffer)
        self._buffer.clear()

    def scores(self) -> dict[str, ProviderScore]:
        """Every provider this client has evidence about (cached until the next record).

        Only the rows written since the last call are read (also other processes' rows) and
        folded into running counts: a decision on a paid quote must not re-read the whole file."""
        with self._lock:
            if self._cache is not None:
                return self._cache
            self._flush_locked()
            if not self.path.exists():
                self._cache = {}
                return self._cache
            rows = self._db().execute(
                "SELECT id, provider, outcome, first_reply_s, tokens_per_s, paid_msat, at FROM outcomes "
                "WHERE id > ? ORDER BY id", (self._read_to,)).fetchall()
            board, replies, speeds = self._board, self._replies, self._speeds
            for _, provider, outcome, first_reply, tps, paid, at in rows:
                s = board.get(provider)
                if s is None:
                    s = board[provider] = ProviderScore(provider)
                    replies[provider], speeds[provider] = deque(maxlen=_RECENT), deque(maxlen=_RECENT)
                setattr(s, outcome, getattr(s, outcome) + 1)
                s.paid_msat += paid or 0
                s.last_at = at
                if first_reply is not None:
                    replies[provider].append(first_reply)
                if tps is not None:
                    speeds[provider].append(tps)
            if rows:
                self._read_to = rows[-1][0]
            for provider in {row[1] for row in rows}:
                s = board[provider]
                if replies[provider]:
                    s.first_reply_s = round(statistics.median(replies[provider]), 4)
                if speeds[provider]:
                    s.tokens_per_s = round(statistics.median(speeds[provider]), 2)
            # a snapshot: a caller's dict does not change under it when later rows are folded in
            self._cache = {p: replace(s) for p, s in board.items()}
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
