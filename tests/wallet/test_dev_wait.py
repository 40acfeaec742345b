"""DevWallet.wait_invoice: settlement seen without per-invoice polling, in and across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from wallet.base import InvoiceState
from wallet.dev import DevWallet, fund
from wallet.errors import InvoiceNotFound


async def test_wait_wakes_on_a_payment_in_this_process(tmp_path: Path) -> None:
    ledger = tmp_path / "dev.sqlite"
    fund(ledger, "payer", 100_000)
    async with DevWallet(ledger, "payee") as payee, DevWallet(ledger, "payer") as payer:
        invs = [await payee.make_invoice(1_000 + i, f"job {i}", 600) for i in range(5)]
        waits = [asyncio.create_task(payee.wait_invoice(inv.payment_hash, timeout=30)) for inv in invs]
        await asyncio.sleep(0)
        for inv in invs[:3]:
            await payer.pay_invoice(inv.bolt11, max_msat=10_000)
        done = await asyncio.gather(*waits[:3])
        assert done == [InvoiceState.SETTLED] * 3
        assert not any(w.done() for w in waits[3:])  # the unpaid ones keep waiting
        for w in waits[3:]:
            w.cancel()
        assert await payee.wait_invoice(invs[3].payment_hash, timeout=0.05) == InvoiceState.PENDING
        assert await payee.wait_invoice(invs[0].payment_hash, timeout=0.05) == InvoiceState.SETTLED
        with pytest.raises(InvoiceNotFound):
            await payee.wait_invoice("00" * 32, timeout=0.05)
        assert await payer.balance() == 100_000 - 3_003


async def test_wait_sees_a_payment_made_by_another_process(tmp_path: Path) -> None:
    ledger = tmp_path / "dev.sqlite"
    fund(ledger, "payer", 100_000)
    async with DevWallet(ledger, "payee") as payee:
        inv = await payee.make_invoice(2_500, "cross-process", 600)
        wait = asyncio.create_task(payee.wait_invoice(inv.payment_hash, timeout=60))
        code = ("import sys; from wallet.dev import DevLedger; "
                "DevLedger(sys.argv[1]).pay_invoice('payer', sys.argv[2], 2_500)")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(ledger), inv.bolt11,
                                                    cwd=str(Path(__file__).resolve().parents[2]),
                                                    stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert await asyncio.wait_for(wait, 60) == InvoiceState.SETTLED


async def test_wait_reports_expiry(tmp_path: Path) -> None:
    async with DevWallet(tmp_path / "dev.sqlite", "payee") as payee:
        inv = await payee.make_invoice(1_000, "short", 1)
        state = InvoiceState.PENDING
        for _ in range(40):  # the invoice expires within ~1 s; each wait returns at expiry or timeout
            state = await payee.wait_invoice(inv.payment_hash, timeout=0.1)
            if state != InvoiceState.PENDING:
                break
        assert state == InvoiceState.EXPIRED
