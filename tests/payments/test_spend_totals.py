"""The budgets' running totals (issue 15, paid path) say what a full SUM over the receipts says.

The daily and session sums read one row each (spend_by_day, spend_by_session), kept by
triggers on receipts. Checked against the SUM the ledger used to run, after every kind of
write (intent, paid with a fee, failed, resurrected, refunded, result), across UTC days and
sessions, from two Ledger objects on one file (as two processes), and for a file written
before the totals existed (filled in on first open). Real SQLite files.
"""

from __future__ import annotations

import sqlite3

from pylon.customer.ledger import Ledger, SpendLimits, utc_day_start

DAY = 86_400
T0 = 1_764_633_600.0  # a UTC midnight


def _scan(path, *, since: float | None = None, session_id: str | None = None) -> int:
    db = sqlite3.connect(str(path))
    try:
        sql = "SELECT COALESCE(SUM(amount_msat + fee_msat - refund_msat), 0) FROM receipts WHERE status != 'failed'"
        args: list = []
        if since is not None:
            sql, args = sql + " AND created_at >= ?", [*args, since]
        if session_id is not None:
            sql, args = sql + " AND session_id = ?", [*args, session_id]
        return int(db.execute(sql, args).fetchone()[0])
    finally:
        db.close()


def _agree(ledger: Ledger, path, days: list[float], sessions: list[str]) -> None:
    for t in days:
        since = utc_day_start(t)
        assert ledger.spent_msat(since=since) == _scan(path, since=since), t
    for s in sessions:
        assert ledger.spent_msat(session_id=s) == _scan(path, session_id=s), s


def _intent(ledger: Ledger, i: int, *, t: float, session: str | None, amount: int = 1_000, **kw):
    return ledger.record_intent(job_id=f"job{i}", provider="p" * 64, payment_hash=f"{i:064x}", amount_msat=amount,
                                bolt11=f"lnbcrt{i}", session_id=session, now=t, **kw)


def test_totals_follow_every_kind_of_write(tmp_path):
    path = tmp_path / "ledger.sqlite"
    a, b = Ledger(path), Ledger(path)  # two writers on one file
    days = [T0 - 1, T0, T0 + 0.5, T0 + DAY - 0.000001, T0 + DAY, T0 + 3 * DAY]
    sessions = ["s1", "s2", "none"]
    try:
        for i, t in enumerate(days):
            _intent(a if i % 2 else b, i, t=t, session="s1" if i % 3 else "s2", amount=1_000 + i)
        _intent(a, 50, t=T0 + 7, session=None)
        _agree(a, path, days, sessions)
        a.mark_paid(f"{1:064x}", preimage="00" * 32, fee_msat=17)
        b.mark_failed(f"{2:064x}", "no route")
        _agree(b, path, days, sessions)
        a.mark_paid(f"{2:064x}", preimage="11" * 32, fee_msat=3)  # money moved after all: resurrected
        b.mark_paid(f"{3:064x}", preimage="22" * 32)
        b.mark_refund_requested(f"{3:064x}", "ab" * 32)
        a.mark_refunded(f"{3:064x}")
        a.mark_result("job4", "e" * 64)
        _agree(a, path, days, sessions)
        _agree(b, path, days, sessions)
        # the daily limit reads the totals inside the intent's transaction
        spent = a.spent_msat(since=utc_day_start(T0))
        limits = SpendLimits(daily_msat=spent + 1_500)
        _intent(a, 60, t=T0 + 10, session="s1", limits=limits)
        try:
            _intent(b, 61, t=T0 + 11, session="s1", limits=limits)
            raise AssertionError("the daily budget let a second intent through")
        except Exception as exc:  # PaymentRefused above_budget
            assert getattr(exc, "reason", "") == "above_budget", exc
        _agree(b, path, days, sessions)
    finally:
        a.close()
        b.close()


def test_a_file_from_before_the_totals_is_filled_in_on_open(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        for i in range(5):
            _intent(ledger, i, t=T0 + i * 40_000, session=f"s{i % 2}")
        ledger.mark_failed(f"{1:064x}", "no route")
        ledger.mark_paid(f"{2:064x}", preimage="00" * 32, fee_msat=9)
    db = sqlite3.connect(str(path))  # as the file was before this version: no triggers, no totals
    for trigger in ("receipts_spend_ins", "receipts_spend_del", "receipts_spend_upd"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP TABLE spend_by_day")
    db.execute("DROP TABLE spend_by_session")
    db.execute("INSERT INTO receipts(job_id, provider, payment_hash, amount_msat, bolt11, status, session_id,"
               " created_at, updated_at) VALUES ('old', 'p', ?, 700, 'x', 'paid', 's0', ?, ?)", ("f" * 64, T0, T0))
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        _agree(ledger, path, [T0 + i * 40_000 for i in range(5)], ["s0", "s1"])
        assert ledger.spent_msat(since=utc_day_start(T0)) == _scan(path, since=T0) > 0
