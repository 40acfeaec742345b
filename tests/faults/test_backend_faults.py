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


async def _money(tally: Tally, cw, pw) -> None:
    tally.paid_msat = FUND - await cw.balance()
    tally.received_msat = await pw.balance()
    tally.answered_cost_msat = tally.answered * PRICE


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
    await _money(tally, cw, pw)
    tally.check()
    assert tally.paid_msat == 0  # never taken: no quote while the backend is down


async def test_backend_killed_during_the_run_paid_jobs_are_refunded(relay_url, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    port = free_port()
    backend = await backend_proc(port, latency_ms=1500).start()
    tally = Tally("backend killed during the run")
    try:
        async with paid_provider(relay_url, f"http://127.0.0.1:{port}/v1", tmp_path / "p.sqlite", pw,
                                 price_msat=PRICE, models=["double-model"], max_tokens_cap=16,
                                 paid_job_deadline_s=3.0) as provider:
            async with paying_customer(relay_url, cw, max_msat=5_000, key_delivery=False) as client:
                asks = asyncio.ensure_future(ask_all(client, ASKS, tally, timeout=40, provider=provider.pubkey))
                await wait_for(lambda: provider.stats.backend_in_flight >= ASKS // 2, what="jobs in the backend")
                await backend.kill()
                await asks
            refunded = provider.store.refunds_in("refunded")
    finally:
        await backend.kill()
    await _money(tally, cw, pw)
    tally.refunded = len(refunded)
    tally.check()
    assert tally.refunded >= 1 and tally.answered + tally.refunded <= ASKS


async def test_backend_back_within_the_deadline_every_paid_job_is_answered(relay_url, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    port = free_port()
    backend = await backend_proc(port, latency_ms=1500).start()
    tally = Tally("backend killed and restarted during the run")
    try:
        async with paid_provider(relay_url, f"http://127.0.0.1:{port}/v1", tmp_path / "p.sqlite", pw,
                                 price_msat=PRICE, models=["double-model"], max_tokens_cap=16,
                                 paid_job_deadline_s=30.0) as provider:
            async with paying_customer(relay_url, cw, max_msat=5_000, key_delivery=False) as client:
                asks = asyncio.ensure_future(ask_all(client, ASKS, tally, timeout=60, provider=provider.pubkey))
                await wait_for(lambda: provider.stats.backend_in_flight >= ASKS // 2, what="jobs in the backend")
                await backend.kill()
                await asyncio.sleep(1.0)
                await backend.start()
                await asks
    finally:
        await backend.kill()
    await _money(tally, cw, pw)
    tally.check()
    assert tally.answered == ASKS
