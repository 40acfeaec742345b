"""The backend (a real process: the OpenAI-compatible double) dies before or during a run of
paid asks. A provider quotes only while its backend is healthy; a paid job whose backend fails
is retried until the job's deadline and, if it still fails, refunded (docs/PROTOCOL.md,
"Refunds"). Every ask ends with an answer or a clean error; no msat is kept without an answer.
The customers pay first (`key_delivery=False`): in pay-for-the-key mode nothing is paid before
the result exists, so there is nothing to refund."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.helpers import wait_for
from tests.faults.harness import Tally, ask_all, backend_proc, free_port
from tests.payments.helpers import paid_provider, paying_customer

pytestmark = pytest.mark.timeout(120)
PRICE = 1_000
FUND = 100_000
ASKS = 6


async def test_backend_dead_before_the_run_nothing_is_charged(relay_url, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    port = free_port()
    backend = await backend_proc(port).start()
    await backend.kill()  # dead before the provider even starts
    tally = Tally("backend killed before the run")
    async with paid_provider(relay_url, f"http://127.0.0.1:{port}/v1", tmp_path / "p.sqlite", pw, price_msat=PRICE,
                             models=["double-model"], max_tokens_cap=16) as provider:
        async with paying_customer(relay_url, cw, max_msat=5_000, key_delivery=False) as client:
            await ask_all(client, ASKS, tally, timeout=20, provider=provider.pubkey)
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()
    assert tally.paid_msat == 0  # never taken: no quote while the backend is down


async def _asks_with_backend_killed(relay_url, dev_ledger, tmp_path, tally: Tally, *, deadline_s: float,
                                    timeout: float, down_s: float | None) -> int:
    """ASKS paid asks against a provider whose backend (1.5 s a reply) is SIGKILLed once half of
    them are in it, and started again after `down_s` seconds (None: never). Fills `tally`;
    returns how many jobs the provider refunded."""
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    port = free_port()
    backend = await backend_proc(port, latency_ms=1500).start()
    try:
        async with paid_provider(relay_url, f"http://127.0.0.1:{port}/v1", tmp_path / "p.sqlite", pw,
                                 price_msat=PRICE, models=["double-model"], max_tokens_cap=16,
                                 paid_job_deadline_s=deadline_s) as provider:
            async with paying_customer(relay_url, cw, max_msat=5_000, key_delivery=False) as client:
                asks = asyncio.ensure_future(ask_all(client, ASKS, tally, timeout=timeout, provider=provider.pubkey))
                await wait_for(lambda: provider.stats.backend_in_flight >= ASKS // 2, what="jobs in the backend")
                if down_s is None:
                    await backend.kill()
                else:
                    await backend.outage(down_s)
                await asks
            refunded = len(provider.store.refunds_in("refunded"))
    finally:
        await backend.kill()
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    return refunded


async def test_backend_killed_during_the_run_paid_jobs_are_refunded(relay_url, dev_ledger, tmp_path):
    tally = Tally("backend killed during the run")
    tally.refunded = await _asks_with_backend_killed(relay_url, dev_ledger, tmp_path, tally, deadline_s=3.0,
                                                     timeout=40, down_s=None)
    tally.check()
    assert tally.refunded >= 1 and tally.answered + tally.refunded <= ASKS


async def test_backend_back_within_the_deadline_every_paid_job_is_answered(relay_url, dev_ledger, tmp_path):
    tally = Tally("backend killed and restarted during the run")
    await _asks_with_backend_killed(relay_url, dev_ledger, tmp_path, tally, deadline_s=30.0, timeout=60, down_s=1.0)
    tally.check()
    assert tally.answered == ASKS
