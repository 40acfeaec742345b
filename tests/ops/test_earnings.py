"""`pylon earnings` / `pylon jobs` over a real job store (real SQLite, written through JobStore's
own state machine), and the CLI as a real process reading it while the store is open."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from pylon.ops.earnings import JobReport
from pylon.provider.jobstore import JobStore

PYLON = str(Path(sys.executable).parent / "pylon")


def _job(store: JobStore, rid: str, customer: str, model: str, outcome: str, amount: int = 1000) -> None:
    """Drive one job through the store's transitions to `outcome`."""
    store.record_seen(rid, customer, 1_700_000_000, "{}", model=model)
    if outcome == "refused":  # refused before a quote: model not served, queue full
        store.transition(rid, "error", error="model not served")
        return
    store.transition(rid, "quoted", amount_msat=amount, model=model)
    if outcome == "free-done":
        store.claim_processing(rid)
        store.mark_result_published(rid, "e" * 64, prompt_tokens=5, completion_tokens=7)
        return
    store.transition(rid, "awaiting_payment", invoice="lnbc1", payment_hash=rid * 2, invoice_expires_at=1)
    if outcome == "expired":
        store.transition(rid, "error", error="invoice expired")
        return
    store.transition(rid, "paid", paid_at=1_700_000_100.0)
    store.claim_processing(rid)
    if outcome == "done":
        store.mark_result_published(rid, "e" * 64, prompt_tokens=3, completion_tokens=4, amount_msat=amount)
    elif outcome in ("paid-failed", "refunded", "owed"):
        store.transition(rid, "error", error="backend error: down")
        if outcome != "paid-failed":
            store.offer_refund(rid, amount)
        if outcome == "refunded":
            assert store.claim_refund(rid, customer, "ab" * 32)
            store.finish_refund(rid, paid=True)


def _fill(path: Path) -> JobStore:
    store = JobStore(path)
    a, b = "a" * 64, "b" * 64
    _job(store, "01", a, "m1", "done", 1000)
    _job(store, "02", a, "m1", "done", 3000)
    _job(store, "03", b, "m2", "done", 500)
    _job(store, "04", b, "m2", "expired", 700)
    _job(store, "05", a, "m1", "refused")
    _job(store, "06", a, "m2", "paid-failed", 800)
    _job(store, "07", b, "m1", "refunded", 900)
    _job(store, "08", b, "m1", "owed", 600)
    _job(store, "09", a, "m1", "free-done", 0)
    return store


def test_earnings_money_rules(tmp_path):
    store = _fill(tmp_path / "provider.sqlite")
    try:
        with JobReport(tmp_path / "provider.sqlite") as report:
            by_model, total = report.earnings("model")
            by_customer, total2 = report.earnings("customer")
            jobs = report.jobs(limit=None)
            failed = report.jobs(failed=True, limit=None)
    finally:
        store.close()
    assert total.to_dict() == total2.to_dict()  # same totals whichever grouping
    assert total.jobs == 9 and total.delivered == 4 and total.refused == 1 and total.expired == 1
    assert total.failed == 3 and total.paid == 6 and total.paid_failed == 3
    assert total.received_msat == 1000 + 3000 + 500 + 800 + 900 + 600
    assert total.earned_msat == 4500  # delivered paid jobs only
    assert total.paid_failed_msat == 2300
    assert total.refunded_msat == 900 and total.refund_owed_msat == 600
    assert total.net_msat == total.received_msat - 900
    assert total.prompt_tokens == 3 + 3 + 3 + 5 and total.completion_tokens == 4 * 3 + 7
    m1 = next(line for line in by_model if line.key == "m1")
    assert (m1.jobs, m1.earned_msat, m1.refunded_msat) == (6, 4000, 900)
    assert [line.key for line in by_customer] == ["a" * 64, "b" * 64]
    assert len(jobs) == 9 and {j.id for j in failed} == {"04", "06", "07", "08"}
    assert next(j for j in jobs if j.id == "07").refund_status == "refunded"


def test_earnings_cli_json_csv_and_jobs(tmp_path, pylon_home):
    store = _fill(pylon_home / "provider.sqlite")  # left open: the CLI reads beside a live writer
    try:
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # off a terminal: natural width
        run = lambda *args: subprocess.run([PYLON, *args], capture_output=True, text=True, timeout=60, env=env)  # noqa: E731
        out = run("earnings", "--by", "model", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["total"]["net_msat"] == 6800 - 900 and [x["key"] for x in data["lines"]] == ["m1", "m2"]
        out = run("earnings", "--csv")
        rows = list(csv.reader(io.StringIO(out.stdout)))
        assert rows[0][0] == "key" and rows[-1][0] == "total" and rows[1][0] == "2023-11-14"
        out = run("earnings")
        assert out.returncode == 0 and "total" in out.stdout and "net msat" in out.stdout
        out = run("jobs", "--state", "done", "--json")
        assert sorted(j["id"] for j in json.loads(out.stdout)) == ["01", "02", "03", "09"]
        out = run("jobs", "--paid", "--model", "m2", "--json")
        assert sorted(j["id"] for j in json.loads(out.stdout)) == ["03", "06"]
        out = run("jobs", "--failed")
        assert out.returncode == 0 and "backend error: down" in out.stdout and "refund refunded 900" in out.stdout
        out = run("jobs", "--state", "nonsense")
        assert out.returncode == 2 and "Traceback" not in out.stderr and "--state" in out.stderr
        out = run("earnings", "--by", "week")
        assert out.returncode == 2 and "Traceback" not in out.stderr
    finally:
        store.close()


def test_earnings_without_a_store(tmp_path, pylon_home):
    out = subprocess.run([PYLON, "earnings", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["total"]["jobs"] == 0
    assert not (pylon_home / "provider.sqlite").exists()  # a report never creates the store
