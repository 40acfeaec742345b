"""What a provider earned and what its jobs did, read from its job store (`provider.sqlite`).

`pylon earnings` and `pylon jobs` read here. The job store is opened read-only (SQLite URI
`mode=ro`), so a running `pylon serve` is never blocked or changed by a report.

The money rules, in millisats (integers), over the jobs still in the store:

* received   = amount of every job whose invoice was settled (`paid_at` set): what the wallet got;
* earned     = the part of `received` for jobs that were delivered (`done`);
* paid_failed = jobs paid and then failed or cancelled (money taken, no answer);
* refunded   = refunds paid back (`refund_status = 'refunded'`), owed = offered but not yet paid;
* net        = received - refunded: what the wallet should hold from this provider's jobs.

A job refused before it was quoted (a model not served here, a full queue, a bad request) is
`refused`, not a failure: on an open relay most requests are for someone else's models. Finished
jobs are pruned from the store after its retention (7 days by default), so older days drop out.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from pylon.errors import ConfigError, StorageError

GroupBy = Literal["day", "model", "customer"]

_KEYS: dict[str, str] = {
    "day": "strftime('%Y-%m-%d', CAST(COALESCE(paid_at, seen_at) AS INTEGER), 'unixepoch')",
    "model": "COALESCE(model, '-')",
    "customer": "customer",
}


@dataclass(slots=True)
class EarningsLine:
    """One group (a day, a model or a customer) or the total."""

    key: str
    jobs: int = 0
    delivered: int = 0
    refused: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    live: int = 0
    paid: int = 0
    paid_failed: int = 0
    received_msat: int = 0
    earned_msat: int = 0
    paid_failed_msat: int = 0
    refunded_msat: int = 0
    refund_owed_msat: int = 0
    net_msat: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = [f for f in EarningsLine.__slots__]  # type: ignore[attr-defined]
_SUMMED = [f for f in FIELDS[1:] if f != "net_msat"]  # the query's columns after the key, in order


@dataclass(slots=True)
class JobLine:
    """One job as `pylon jobs` shows it."""

    id: str
    seen_at: float
    updated_at: float
    status: str
    model: str | None
    customer: str
    amount_msat: int | None
    paid: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    refund_status: str | None
    refund_msat: int | None
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobReport:
    """Read-only queries over one provider job store."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            self._db: sqlite3.Connection | None = None
            return
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self._db.execute("PRAGMA busy_timeout=5000")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the provider's job store {self.path}: {exc}") from exc
        if "status" not in columns:
            raise StorageError(f"{self.path} is not a provider job store (no jobs table)")
        self._refunds = "refund_status" in columns  # stores from before refunds have no such columns

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> "JobReport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _where(since: float | None, model: str | None, customer: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("COALESCE(paid_at, seen_at) >= ?")
            params.append(float(since))
        if model:
            clauses.append("model = ?")
            params.append(model)
        if customer:
            clauses.append("customer LIKE ?")
            params.append(customer.lower() + "%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def earnings(self, by: GroupBy = "day", *, since: float | None = None, model: str | None = None,
                 customer: str | None = None) -> tuple[list[EarningsLine], EarningsLine]:
        """Per-group lines (sorted by key) and the total over them."""
        if by not in _KEYS:
            raise ConfigError(f"--by must be one of day, model, customer (got {by!r})")
        total = EarningsLine(key="total")
        if self._db is None:
            return [], total
        refunded = "CASE WHEN refund_status = 'refunded' THEN refund_msat END" if self._refunds else "NULL"
        owed = "CASE WHEN refund_status IN ('offered', 'paying') THEN refund_msat END" if self._refunds else "NULL"
        # imported here, not at module level: every `pylon` start-up imports this module (cli.earnings_cmd)
        from pylon.provider.payments import EXPIRED_REASON  # the job store's wording for an expired invoice

        where, params = self._where(since, model, customer)
        sql = f"""
            SELECT {_KEYS[by]} AS k, COUNT(*),
              SUM(status = 'done'),
              SUM(status = 'error' AND amount_msat IS NULL),
              SUM(status = 'error' AND amount_msat IS NOT NULL AND COALESCE(error, '') != ?),
              SUM(status = 'error' AND amount_msat IS NOT NULL AND error = ?),
              SUM(status = 'cancelled'),
              SUM(status NOT IN ('done', 'error', 'cancelled')),
              SUM(paid_at IS NOT NULL),
              SUM(paid_at IS NOT NULL AND status IN ('error', 'cancelled')),
              COALESCE(SUM(CASE WHEN paid_at IS NOT NULL THEN amount_msat END), 0),
              COALESCE(SUM(CASE WHEN paid_at IS NOT NULL AND status = 'done' THEN amount_msat END), 0),
              COALESCE(SUM(CASE WHEN paid_at IS NOT NULL AND status IN ('error', 'cancelled') THEN amount_msat END), 0),
              COALESCE(SUM({refunded}), 0),
              COALESCE(SUM({owed}), 0),
              COALESCE(SUM(prompt_tokens), 0),
              COALESCE(SUM(completion_tokens), 0)
            FROM jobs{where} GROUP BY k ORDER BY k"""
        try:
            rows = self._db.execute(sql, [EXPIRED_REASON, EXPIRED_REASON, *params]).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the provider's job store {self.path}: {exc}") from exc
        lines = []
        for row in rows:
            values = [int(v or 0) for v in row[1:]]
            line = EarningsLine(str(row[0]), **dict(zip(_SUMMED, values)))
            line.net_msat = line.received_msat - line.refunded_msat
            lines.append(line)
            for name in FIELDS[1:]:
                setattr(total, name, getattr(total, name) + getattr(line, name))
        return lines, total

    def jobs(self, *, limit: int | None = 20, status: str | None = None, model: str | None = None,
             customer: str | None = None, since: float | None = None, paid: bool = False,
             failed: bool = False) -> list[JobLine]:
        """Most recent first (by the time the request was seen)."""
        if self._db is None:
            return []
        where, params = self._where(since, model, customer)
        extra = []
        if status:
            extra.append("status = ?")
            params.append(status)
        if paid:
            extra.append("paid_at IS NOT NULL")
        if failed:
            extra.append("status IN ('error', 'cancelled') AND amount_msat IS NOT NULL")
        if extra:
            where = (where + " AND " if where else " WHERE ") + " AND ".join(extra)
        refund_cols = "refund_status, refund_msat" if self._refunds else "NULL, NULL"
        sql = (f"SELECT request_id, seen_at, updated_at, status, model, customer, amount_msat, paid_at IS NOT NULL,"
               f" prompt_tokens, completion_tokens, error, {refund_cols}, attempts FROM jobs{where}"
               f" ORDER BY seen_at DESC" + (" LIMIT ?" if limit else ""))
        if limit:
            params.append(int(limit))
        try:
            rows = self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the provider's job store {self.path}: {exc}") from exc
        return [JobLine(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], r[10], r[11], r[12], r[13])
                for r in rows]

    def outcome_counts(self) -> dict[str, int]:
        """status -> jobs, what the metrics of the same run must agree with."""
        if self._db is None:
            return {}
        return dict(self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


def csv_rows(lines: list[EarningsLine], total: EarningsLine) -> Iterator[list[Any]]:
    """Header, the lines, then the total (for `--csv`)."""
    yield list(FIELDS)
    for line in [*lines, total]:
        yield [getattr(line, name) for name in FIELDS]


def utc_day(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at if at is not None else time.time()))
