"""20 (PYLON_FAULT_CONCURRENT_ASKS=40 for the full case; 40 take ~2 min on 2 busy cores) `pylon ask` processes at once on ONE PYLON_HOME (one receipts ledger), paying one provider.

Before per-intent leases, every client start ran ledger recovery over all 'pending' receipts,
took another live process's in-flight intent for a crash leftover and tried to mark it failed
("receipt N is already paid; it cannot be marked failed"). Now recovery only touches intents
whose owner's lease is free (pylon.customer.lease)."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.faults.harness import PYLON, Tally, clean_cli_failure, cli_env
from tests.payments.helpers import paid_provider

pytestmark = pytest.mark.timeout(240)
ASKS = int(os.environ.get("PYLON_FAULT_CONCURRENT_ASKS", "20"))
PRICE = 1_000


async def test_forty_concurrent_cli_asks_on_one_pylon_home(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 1_000_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    home = tmp_path / "customer-home"
    tally = Tally(f"{ASKS} concurrent CLI asks, one PYLON_HOME")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=PRICE,
                             max_tokens_cap=16) as provider:
        async def one(i: int) -> None:
            proc = await asyncio.create_subprocess_exec(
                PYLON, "ask", f"question {i}", "--relay", relay_url, "--provider", provider.keys.npub,
                "--wallet", dev_ledger.uri("customer"), "--max-msat", "5000", "--timeout", "120",
                env=cli_env(home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 180)
            except asyncio.TimeoutError:
                proc.kill()
                tally.unclean.append(f"ask {i} hung")
                return
            tally.asked += 1
            if proc.returncode == 0 and out.strip():
                tally.answered += 1
            elif clean_cli_failure(proc.returncode, err.decode()):
                tally.failed_cleanly += 1
                print(f"ask {i} failed: {err.decode().strip()[:300]}")
            else:
                tally.unclean.append(err.decode()[-500:])
        await asyncio.gather(*(one(i) for i in range(ASKS)))
    tally.paid_msat = 1_000_000 - await cw.balance()
    tally.received_msat = await pw.balance()
    tally.answered_cost_msat = tally.answered * PRICE
    tally.check()
    assert tally.answered == ASKS  # no fault injected: nobody fails
