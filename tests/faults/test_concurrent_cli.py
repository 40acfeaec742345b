"""20 (PYLON_FAULT_CONCURRENT_ASKS=40 for the full case; 40 take ~2 min on 2 busy cores) `pylon ask` processes at once on ONE PYLON_HOME (one receipts ledger), paying one provider.

Before per-intent leases, every client start ran ledger recovery over all 'pending' receipts,
took another live process's in-flight intent for a crash leftover and tried to mark it failed
("receipt N is already paid; it cannot be marked failed"). Now recovery only touches intents
whose owner's lease is free (pylon.customer.lease)."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.faults.harness import Tally, cli_ask, cli_env
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
        await asyncio.gather(*(
            cli_ask(tally, i, ["ask", f"question {i}", "--relay", relay_url, "--provider", provider.keys.npub,
                               "--wallet", dev_ledger.uri("customer"), "--max-msat", "5000", "--timeout", "120"],
                    cli_env(home), timeout=180)
            for i in range(ASKS)))
    await tally.settle(cw, pw, fund=1_000_000, price=PRICE)
    tally.check()
    assert tally.answered == ASKS  # no fault injected: nobody fails
