"""Receipts ledger (exactly once, crash recovery) and budgets (concurrency) on real SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pylon.customer.budget import Budget
from pylon.customer.invoice_check import PaymentRefused, check_invoice
from pylon.customer.ledger import Ledger
from wallet import InsufficientBalance, InvoiceState

REPO = Path(__file__).resolve().parents[2]


def test_ledger_lives_under_pylon_home(pylon_home):
    with Ledger() as led:
        assert led.path == pylon_home / "ledger.sqlite"
        assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_exactly_one_payment_per_job_and_per_hash(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        r = led.record_intent(job_id="job1", provider="p1", payment_hash="aa" * 32, amount_msat=100, bolt11="lnbcrt…")
        assert r.status == "pending" and led.has_paid("aa" * 32) and led.intent_for_job("job1") == r
        with pytest.raises(PaymentRefused) as e1:   # same job, another invoice (a second provider quoting)
            led.record_intent(job_id="job1", provider="p2", payment_hash="bb" * 32, amount_msat=100, bolt11="x")
        with pytest.raises(PaymentRefused) as e2:   # same invoice, another job (resubmitted request)
            led.record_intent(job_id="job2", provider="p1", payment_hash="aa" * 32, amount_msat=100, bolt11="x")
        assert e1.value.reason == e2.value.reason == "already_paid"
        paid = led.mark_paid("aa" * 32, preimage="cc" * 32, fee_msat=3)
        assert (paid.status, paid.preimage, paid.fee_msat) == ("paid", "cc" * 32, 3)
        assert led.mark_paid("aa" * 32, preimage="cc" * 32) == paid  # idempotent
        with pytest.raises(PaymentRefused):
            led.record_intent(job_id="job1", provider="p1", payment_hash="dd" * 32, amount_msat=1, bolt11="x")
        # a failed attempt frees the job for another try
        led.record_intent(job_id="job3", provider="p1", payment_hash="ee" * 32, amount_msat=5, bolt11="x")
        led.mark_failed("ee" * 32, "no route")
        assert not led.has_paid("ee" * 32) and led.intent_for_job("job3") is None
        again = led.record_intent(job_id="job3", provider="p1", payment_hash="ff" * 32, amount_msat=5, bolt11="x")
        assert again.status == "pending"
        assert led.spent_msat() == 103 + 5
        # totals count paid receipts only; budgets (spent_msat) count the pending one too
        assert led.totals_by_provider()["p1"] == {"count": 1, "amount_msat": 100, "fee_msat": 3}
        assert sum(v["amount_msat"] for v in led.totals_by_day().values()) == 100
        assert (led.paid_msat(), led.pending_msat()) == (103, 5)


_CRASHER = r"""
import asyncio, os, signal, sys
from pylon.customer.ledger import Ledger
from pylon.customer.invoice_check import check_invoice
from wallet.dev import DevWallet
async def main(ledger_path, dev_path, bolt):
    led = Ledger(ledger_path)
    w = DevWallet(dev_path, "alice")
    inv = check_invoice(bolt, amount_tag_msat=7000, bid_msat=7000, max_msat=7000, budget_left_msat=None,
                        wallet_network=w.network)
    led.record_intent(job_id="job-crash", provider="prov", payment_hash=inv.payment_hash,
                      amount_msat=7000, bolt11=bolt)
    await w.pay_invoice(bolt, max_msat=7000)
    os.kill(os.getpid(), signal.SIGKILL)   # dies between paying and recording
asyncio.run(main(*sys.argv[1:4]))
"""


async def test_crash_between_paying_and_recording_is_recovered(tmp_path, dev_ledger):
    dev_ledger.fund("alice", 10_000)
    bob, alice = dev_ledger.wallet("bob"), dev_ledger.wallet("alice")
    inv = await bob.make_invoice(7_000)
    lpath = tmp_path / "receipts.sqlite"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CRASHER, str(lpath), str(dev_ledger.path),
                                                inv.bolt11, cwd=REPO)
    assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL
    with Ledger(lpath) as led:
        (pending,) = led.pending()
        assert pending.job_id == "job-crash" and pending.preimage is None
        assert led.has_paid(inv.payment_hash)  # a restarted client will not pay again...
        with pytest.raises(PaymentRefused):
            led.record_intent(job_id="job-crash", provider="prov", payment_hash=inv.payment_hash,
                              amount_msat=7000, bolt11=inv.bolt11)
        (settled,) = await led.recover(alice)           # ...and recovery asks the wallet
        assert settled.status == "paid"
        assert settled.preimage == (await alice.payment_details(inv.payment_hash)).preimage
        assert led.pending() == [] and await led.recover(alice) == []
    assert await alice.balance() == 3_000 and await bob.balance() == 7_000


async def test_recover_marks_unpaid_intents_failed(tmp_path, dev_ledger):
    bob, alice = dev_ledger.wallet("bob"), dev_ledger.wallet("alice")
    inv = await bob.make_invoice(1_000)
    with Ledger(tmp_path / "r.sqlite") as led:   # its process stopped before the wallet was called
        led.record_intent(job_id="j", provider="p", payment_hash=inv.payment_hash, amount_msat=1000, bolt11=inv.bolt11)
        assert await led.recover(alice) == []     # its own intent: maybe being paid right now, never touched
    with Ledger(tmp_path / "r.sqlite") as led:   # the next start: the owner's lease is gone
        (r,) = await led.recover(alice)
        assert r.status == "failed" and not led.has_paid(inv.payment_hash)


async def test_recover_leaves_a_live_owners_intent_alone(tmp_path, dev_ledger):
    """Two processes (here two Ledgers: the lease is a flock on an open file, so they exclude
    each other like processes do) on one ledger: the second one's recovery must not read the
    first one's unpaid-yet intent as failed; once the first pays, its receipt is paid."""
    dev_ledger.fund("alice", 5_000)
    bob, alice = dev_ledger.wallet("bob"), dev_ledger.wallet("alice")
    inv = await bob.make_invoice(1_000)
    path = tmp_path / "r.sqlite"
    with Ledger(path) as live, Ledger(path) as starting:
        live.record_intent(job_id="j", provider="p", payment_hash=inv.payment_hash, amount_msat=1000,
                           bolt11=inv.bolt11)
        assert starting.orphaned() == [] and await starting.recover(alice) == []
        await alice.pay_invoice(inv.bolt11, max_msat=1000)
        assert live.mark_paid(inv.payment_hash, preimage=None).status == "paid"
    assert await alice.balance() == 4_000


async def test_budget_pay_end_to_end_and_failures(tmp_path, dev_ledger):
    dev_ledger.fund("alice", 5_000)
    bob, alice = dev_ledger.wallet("bob"), dev_ledger.wallet("alice")
    budget = Budget(Ledger(tmp_path / "r.sqlite"), per_job_msat=3_000, daily_msat=4_000)
    inv = await bob.make_invoice(2_500)
    decoded = check_invoice(inv.bolt11, amount_tag_msat=2_500, bid_msat=3_000, max_msat=budget.per_job_msat,
                            budget_left_msat=budget.left_msat(), wallet_network=alice.network)
    r = await budget.pay(alice, decoded, job_id="j1", provider="p")
    assert r.status == "paid" and r.preimage and budget.left_msat() == 1_500
    with pytest.raises(PaymentRefused) as dup:
        await budget.pay(alice, decoded, job_id="j1", provider="p")
    assert dup.value.reason == "already_paid"
    inv2 = await bob.make_invoice(2_000)
    d2 = check_invoice(inv2.bolt11, amount_tag_msat=2_000, bid_msat=None, max_msat=None, budget_left_msat=None,
                       wallet_network="regtest")
    with pytest.raises(PaymentRefused) as over:
        await budget.pay(alice, d2, job_id="j2", provider="p")
    assert over.value.reason == "above_budget"
    # the wallet refuses (not enough money): the receipt is failed and the budget room comes back
    poor = Budget(Ledger(tmp_path / "r2.sqlite"))
    with pytest.raises(InsufficientBalance):
        await poor.pay(dev_ledger.wallet("nobody"), d2, job_id="j3", provider="p")
    assert poor.ledger.intent_for_job("j3") is None and poor.ledger.spent_msat() == 0
    assert await alice.balance() == 2_500
    assert await bob.lookup_invoice(inv2.payment_hash) == InvoiceState.PENDING


def test_budget_reserve_under_concurrency_threads(tmp_path):
    """16 threads reserve 100 msat each against a 1000 msat session budget: exactly 10 pass."""
    budget = Budget(Ledger(tmp_path / "r.sqlite"), session_msat=1_000)
    barrier = threading.Barrier(16)
    results: list[str] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            budget.reserve(100, job_id=f"job{i}", provider="p", payment_hash=f"{i:064x}", bolt11="x")
            results.append("ok")
        except PaymentRefused as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 10 and results.count("above_budget") == 6
    assert budget.spent_session_msat() == 1_000 and budget.left_msat() == 0


_RESERVER = r"""
import sys
from pylon.customer.budget import Budget
from pylon.customer.ledger import Ledger
from pylon.customer.invoice_check import PaymentRefused
b = Budget(Ledger(sys.argv[1]), daily_msat=2_000)
ok = 0
for i in range(20):
    try:
        b.reserve(100, job_id=f"{sys.argv[2]}-{i}", provider="p", payment_hash=f"{sys.argv[2]}{i:063x}", bolt11="x")
        ok += 1
    except PaymentRefused:
        pass
print(ok)
"""


def test_daily_budget_holds_across_processes(tmp_path):
    path = tmp_path / "shared.sqlite"
    Ledger(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", _RESERVER, str(path), tag], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for tag in "abc"]
    total = sum(int(p.communicate(timeout=120)[0]) for p in procs)
    assert total == 20  # 3 x 20 attempts of 100 against 2000 per day
    with Ledger(path) as led:
        assert led.spent_today_msat() == 2_000


def test_budget_check_and_bad_limits(tmp_path):
    b = Budget(Ledger(tmp_path / "r.sqlite"), per_job_msat=10)
    with pytest.raises(PaymentRefused) as e:
        b.check(11)
    assert e.value.reason == "above_max"
    b.check(10)
    assert b.left_msat() is None
    with pytest.raises(ValueError):
        Budget(Ledger(tmp_path / "x.sqlite"), daily_msat=-1)


def test_receipt_lookups_use_indexes_not_scans(tmp_path):
    """Each payment looks receipts up by job and by hash: with a scan, every payment read every
    receipt ever written (the duplicate check's OR of job and hash could not use the partial
    indexes). SQLite's own plans of the statements each write ran must not scan the table."""
    with Ledger(tmp_path / "l.sqlite") as led:
        for i in range(50):
            led.record_intent(job_id=f"old{i}", provider="p", payment_hash=f"{i:064x}", amount_msat=1, bolt11="x")
            if i % 2:
                led.mark_failed(f"{i:064x}", "no route")
        ran: list[str] = []
        led._db.set_trace_callback(ran.append)   # the writes
        led._rdb.set_trace_callback(ran.append)  # the reads (get, has_paid), on their own connection
        led.record_intent(job_id="job", provider="p", payment_hash="ab" * 32, amount_msat=5, bolt11="x")
        led.mark_paid("ab" * 32, preimage="cd" * 32)
        led.mark_result("job", "ef" * 32)
        led.mark_failed(f"{2:064x}", "gone")
        assert led.get(f"{3:064x}").status == "failed"
        assert led.has_paid("ab" * 32)
        led._db.set_trace_callback(None)
        led._rdb.set_trace_callback(None)
        reads = [sql for sql in ran if sql.lstrip().upper().startswith("SELECT")]
        assert len(reads) >= 7
        assert any("ORDER BY (status = 'failed')" in sql for sql in reads)  # get's own statement
        for sql in reads:
            plan = " / ".join(row[3] for row in led._db.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN receipts" not in plan, f"{sql}\n  -> {plan}"


def test_receipt_to_dict_is_every_field_as_stored(tmp_path):
    """`Receipt.to_dict` lists the fields itself (no recursive asdict): it must stay equal to
    asdict, which a field holding a container would break."""
    with Ledger(tmp_path / "l.sqlite") as led:
        led.record_intent(job_id="j", provider="p", payment_hash="ab" * 32, amount_msat=7, bolt11="lnbcrt1x")
        paid = led.mark_paid("ab" * 32, preimage="cd" * 32, fee_msat=1)
    as_dict = paid.to_dict()
    assert as_dict == dataclasses.asdict(paid)
    assert (as_dict["amount_msat"], as_dict["preimage"], as_dict["status"]) == (7, "cd" * 32, "paid")
    assert all(not isinstance(v, (list, dict, set, tuple)) for v in as_dict.values())
