"""The relay (a real `pylon relay` process) killed mid-run and restarted on the same port and
database a few seconds later (the issue's 10 s outage, shortened to keep the suite short); and
customers whose clocks are 10 minutes ahead or behind (the PYLON_CLOCK_OFFSET_S test hook of
pylon.customer.clock, in real `pylon ask` processes)."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.e2e.helpers import wait_for
from tests.faults.harness import Tally, ask_all, cli_ask, cli_env, free_port, relay_proc
from tests.payments.helpers import paid_provider, paying_customer

pytestmark = pytest.mark.timeout(150)
PRICE = 1_000
FUND = 100_000
OUTAGE_S = float(os.environ.get("PYLON_FAULT_RELAY_OUTAGE_S", "3"))


async def test_relay_down_mid_run_every_paid_ask_is_answered(openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    port = free_port()
    relay = await relay_proc(port, tmp_path / "relay.sqlite", tmp_path / "relay-home").start()
    url = relay.first_line
    openai_double.latency_s = 1.5  # the results are due while the relay is down
    asks_n = 6
    tally = Tally(f"relay down {OUTAGE_S:g} s mid-run")
    try:
        async with paid_provider(url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=PRICE,
                                 max_tokens_cap=16) as provider:
            async with paying_customer(url, cw, max_msat=5_000, key_delivery=False) as client:  # pay first: money at risk
                asks = asyncio.ensure_future(ask_all(client, asks_n, tally, timeout=60, provider=provider.pubkey))
                await wait_for(lambda: provider.stats.backend_in_flight >= asks_n, what="every job paid and running")
                await relay.outage(OUTAGE_S)
                await asks
    finally:
        await relay.kill()
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()
    assert tally.answered == asks_n


@pytest.mark.parametrize("offset_s", [600, -600])
async def test_customer_clock_ten_minutes_off_is_still_served(relay_url, openai_double, dev_ledger, tmp_path,
                                                              offset_s):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    tally = Tally(f"customer clock {offset_s:+d} s")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=PRICE,
                             max_tokens_cap=16) as provider:
        await asyncio.gather(*(
            cli_ask(tally, i, ["ask", f"skewed {i}", "--relay", relay_url, "--provider", provider.keys.npub,
                               "--wallet", dev_ledger.uri("customer"), "--max-msat", "5000", "--timeout", "30"],
                    cli_env(tmp_path / "customer", PYLON_CLOCK_OFFSET_S=str(offset_s), PYLON_KEY_DELIVERY="false"),
                    timeout=90)
            for i in range(3)))
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()
    assert tally.answered == 3
