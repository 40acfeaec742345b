"""The provider (a real `pylon serve` process) SIGKILLed before and during a run of paid asks and
started again on the same PYLON_HOME: jobs published while it was down are found by the start-up
look-back; paid jobs it was running are run again once; every ask ends with an answer or a clean
error, and what the customer paid is what the provider received for answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pylon.nostr.keys import Keys
from tests.e2e.helpers import wait_for, wait_stored
from tests.faults.harness import PYLON, Proc, Tally, ask_all, cli_env
from tests.payments.helpers import paying_customer

pytestmark = pytest.mark.timeout(150)
PRICE = 1_000
FUND = 100_000
ASKS = 4


def _serve(relay_url: str, backend_url: str, home: Path, wallet_uri: str) -> Proc:
    return Proc("provider", [PYLON, "serve", "--relay", relay_url, "--backend", backend_url, "--price-msat",
                             str(PRICE), "--max-tokens-cap", "16", "--wallet", wallet_uri], env=cli_env(home))


def _provider_home(tmp_path: Path) -> tuple[Keys, Path]:
    home = tmp_path / "provider-home"
    home.mkdir()
    keys = Keys.generate()
    keys.save(home / "identity.key")
    return keys, home


async def test_provider_killed_before_the_jobs_serves_them_after_restart(relay_url, openai_double, dev_ledger,
                                                                         tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, home = _provider_home(tmp_path)
    provider = _serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"))
    await provider.start()
    await provider.kill()  # down before any job is published
    tally = Tally("provider killed before the jobs")
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000, key_delivery=False) as client:
            asks = asyncio.ensure_future(ask_all(client, ASKS, tally, timeout=60, provider=keys.public_key))
            await wait_stored(relay_url, ASKS, kinds=[5050], authors=[client.pubkey])  # published while nobody serves
            await provider.start()
            await asks
    finally:
        await provider.stop()
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()
    assert tally.answered == ASKS


async def test_provider_killed_during_paid_jobs_serves_them_after_restart(relay_url, openai_double, dev_ledger,
                                                                          tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, home = _provider_home(tmp_path)
    openai_double.latency_s = 2.0  # every paid job is in the backend when the provider dies
    provider = _serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"))
    await provider.start()
    tally = Tally("provider killed during paid jobs")
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000, key_delivery=False) as client:
            asks = asyncio.ensure_future(ask_all(client, ASKS, tally, timeout=60, provider=keys.public_key))
            await wait_for(lambda: len(openai_double.requests) >= ASKS, timeout=60, what="every paid job running")
            await provider.outage(1.0)
            await asks
    finally:
        await provider.stop()
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()
    assert tally.answered == ASKS
