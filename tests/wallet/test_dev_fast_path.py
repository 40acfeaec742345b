"""The dev wallet's calls run on the event loop when the ledger is free and move to a worker
thread when another writer holds it (wallet.dev, "Where the calls run"): never a wait on the
loop, never a write done twice."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from wallet import InvoiceState
from wallet.dev import DevLedger, LedgerBusy


def _invoice_count(path) -> int:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT COUNT(*) FROM invoices").fetchone()[0]
    finally:
        db.close()


def _hold_write_lock(path) -> sqlite3.Connection:
    """Another process's writer, mid-transaction (a second connection holds SQLite's write lock)."""
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_run_now_refuses_a_busy_ledger_before_writing(dev_ledger):
    ledger = DevLedger(dev_ledger.path)
    try:
        ledger.ensure_account("bob")
        other = _hold_write_lock(dev_ledger.path)
        try:
            with pytest.raises(LedgerBusy):
                ledger.run_now(ledger.make_invoice, "bob", 1_000, "memo", 60)
        finally:
            other.rollback()
            other.close()
        assert _invoice_count(dev_ledger.path) == 0
        # free again: the same call goes through on this thread
        inv = ledger.run_now(ledger.make_invoice, "bob", 1_000, "memo", 60)
        assert inv.amount_msat == 1_000 and _invoice_count(dev_ledger.path) == 1
    finally:
        ledger.close()


def test_run_now_does_not_wait_for_a_writer_of_this_process(dev_ledger):
    ledger = DevLedger(dev_ledger.path)
    try:
        ledger._wlock.acquire()  # another thread of this process is writing this file
        try:
            with pytest.raises(LedgerBusy):
                ledger.run_now(ledger.fund, "carol", 5)
        finally:
            ledger._wlock.release()
        assert ledger.balance("carol") == 0
    finally:
        ledger.close()


async def test_a_busy_ledger_moves_the_call_to_a_thread_and_the_loop_keeps_running(dev_ledger, monkeypatch):
    import wallet.dev as dev_module

    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(fn, *args):
        hops.append(fn.__name__)
        return await to_thread(fn, *args)

    monkeypatch.setattr(dev_module.asyncio, "to_thread", counted)
    bob, alice = dev_ledger.wallet("bob"), dev_ledger.wallet("alice")
    await alice.fund(10_000)
    inv = await bob.make_invoice(2_000, "fast path", expiry_s=60)
    assert hops == []  # a free ledger: every call so far ran on the loop
    other = _hold_write_lock(dev_ledger.path)
    try:
        paying = asyncio.create_task(alice.pay_invoice(inv.bolt11, max_msat=2_000))
        ticks = 0
        for _ in range(5):  # the loop is not blocked while the payment waits for the other writer
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 5 and not paying.done() and hops == ["begin_payment"]  # waiting on a thread
    finally:
        other.rollback()
        other.close()
    payment = await asyncio.wait_for(paying, 10)
    assert payment.payment_hash == inv.payment_hash
    assert await alice.balance() == 8_000 and await bob.balance() == 2_000
    assert await bob.lookup_invoice(inv.payment_hash) == InvoiceState.SETTLED
