"""Budget holds (pylon.customer.budget): a job's bid is set aside before it is published, so
concurrent jobs — from several threads and event loops — never bid more than the session has
left; paying consumes the hold, release() returns the rest. Real SQLite receipts ledger."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pylon.customer.budget import Budget
from pylon.customer.invoice_check import PaymentRefused
from pylon.customer.ledger import Ledger


def _pay(budget: Budget, hold, amount: int, n: int) -> None:
    hold.job_id = f"job{n}"
    budget.reserve(amount, job_id=f"job{n}", provider="p" * 64, payment_hash=f"{n:064x}", bolt11="lnbcrt1")


async def test_holds_cap_concurrent_bids_and_wait_for_room(tmp_path):
    budget = Budget(Ledger(tmp_path / "l.sqlite"), per_job_msat=1_000, session_msat=2_500)
    a, b = await budget.hold(None), await budget.hold(None)
    assert (a.msat, b.msat) == (1_000, 1_000) and budget.session_room_msat() == 500
    third = asyncio.create_task(budget.hold(None))  # 500 left while others hold: it waits
    await asyncio.sleep(0.05)
    assert not third.done()
    _pay(budget, a, 700, 1)   # a paid 700: its hold is consumed, the ledger counts 700
    budget.release(a)
    budget.release(b)          # b paid nothing
    c = await asyncio.wait_for(third, 5)
    assert c.msat == 1_000 and budget.session_room_msat() == 800
    _pay(budget, c, 1_000, 2)
    budget.release(c)
    last = await budget.hold(None)  # nothing else held: it takes what is left
    assert last.msat == 800
    _pay(budget, last, 800, 3)
    budget.release(last)
    with pytest.raises(PaymentRefused, match="used up"):
        await budget.hold(None)
    assert budget.spent_session_msat() == 2_500


def test_holds_from_many_threads_never_exceed_the_budget(tmp_path):
    budget = Budget(Ledger(tmp_path / "l.sqlite"), per_job_msat=300, session_msat=2_000)
    paid, refused, lock = [], [], threading.Lock()

    def worker(i: int) -> None:
        async def one():
            try:
                hold = await budget.hold(None)
            except PaymentRefused:
                with lock:
                    refused.append(i)
                return
            try:
                if hold.msat >= 250:  # the "provider" asks 250 msat
                    _pay(budget, hold, 250, i)
                    with lock:
                        paid.append(i)
            finally:
                budget.release(hold)
        asyncio.run(one())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(paid) == 8 and budget.spent_session_msat() == 2_000
    assert len(paid) + len(refused) <= 16


async def test_no_session_budget_means_no_hold(tmp_path):
    assert await Budget(Ledger(tmp_path / "l.sqlite"), per_job_msat=5).hold(None) is None
