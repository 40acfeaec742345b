"""Crashes and restarts around a payment: the customer killed (SIGKILL) between paying and
recording; the provider stopped with a paid job not yet served, with an invoice paid while
it was down, and with an invoice that expired unpaid."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pylon.customer.payments import ClientPayments, JobPayment
from pylon.customer.invoice_check import PaymentRefused
from pylon.provider.jobstore import JobStore
from pylon.customer.ledger import Ledger
from pylon.jobs.nip90 import JobFeedback, JobRequest
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import wait_for
from tests.payments.helpers import paid_provider, paying_customer

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


async def test_client_killed_between_paying_and_recording(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    db = tmp_path / "p.sqlite"
    async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=3_000) as provider:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.payments.crashing_client", relay_url, str(dev_ledger.path), provider.pubkey,
            cwd=str(REPO), env=dict(os.environ), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line.startswith("PAID "), line + (await proc.stderr.read()).decode()[-2000:]
            payment_hash = line.split()[1]
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        with Ledger() as ledger:
            (receipt,) = ledger.receipts()
        assert receipt.status == "pending" and receipt.payment_hash == payment_hash  # died before recording
        # the provider saw its invoice settle and served the job
        await wait_for(lambda: provider.store.status(receipt.job_id) == "done", what="the paid job served")
    # restart: a new client session on the same PYLON_HOME asks the wallet what happened
    async with paying_customer(relay_url, cw):
        pass
    with Ledger() as ledger:
        (after,) = ledger.receipts()
    assert after.status == "paid" and after.preimage and after.id == receipt.id
    # the same quote delivered again is not paid twice
    again = ClientPayments(cw)
    await again.start()
    with pytest.raises(PaymentRefused) as info:
        await again.on_payment_required(JobPayment(), job_id=receipt.job_id, provider=receipt.provider,
                                        amount_msat=3_000, bolt11=receipt.bolt11, bid_msat=None)
    again.close()
    assert info.value.reason == "already_paid"
    assert await cw.balance() == 47_000 and await pw.balance() == 3_000


async def test_provider_restart_serves_a_paid_job_it_had_not_served(relay_url, openai_double, dev_ledger, tmp_path):
    """concurrency=1 and a hung generation keep the second paid job waiting for the slot when
    the provider stops: it is `paid` in the store, and the next start serves it once."""
    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, db = Keys.generate(), tmp_path / "p.sqlite"
    openai_double.hang_next(1)
    async with paying_customer(relay_url, cw) as client:
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=1_000, keys=keys,
                                 concurrency=1) as provider:
            asks = [asyncio.create_task(client.ask(f"job {i}", provider=keys.public_key, timeout=90))
                    for i in range(2)]
            await wait_for(lambda: provider.store.counts() == {"paid": 1, "processing": 1},
                           what="one job generating (hung), one paid and waiting")
            (paid_id,) = [r.request_id for r in provider.store.jobs_in(["paid"])]
        assert not any(a.done() for a in asks)
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=1_000, keys=keys):
            outcomes = await asyncio.gather(*asks)
    assert [o.paid_msat for o in outcomes] == [1_000, 1_000]
    assert await cw.balance() == 48_000 and await pw.balance() == 2_000
    with JobStore(db) as store:
        assert store.get(paid_id).status == "done" and store.get(paid_id).attempts == 1
        assert store.counts() == {"done": 2}


async def _request(pool: RelayPool, keys: Keys, provider: str) -> JobRequest:
    req = JobRequest.from_prompt("pay later", providers=[provider])
    await pool.publish(req.to_event(keys, encrypted=False))
    return req


async def _feedback(pool: RelayPool, keys: Keys, job_id: str, status: str) -> JobFeedback:
    async def loop() -> JobFeedback:
        while True:
            for event in await pool.query([Filter.of(kinds=[7000], e=[job_id])], timeout=5):
                fb = JobFeedback.from_event(event, keys)
                if fb.status == status:
                    return fb
            await asyncio.sleep(0.05)
    return await asyncio.wait_for(loop(), 30)


async def test_invoice_paid_while_the_provider_was_down_is_served(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, me, db = Keys.generate(), Keys.generate(), tmp_path / "p.sqlite"
    async with RelayPool([relay_url], keys=me) as pool:
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=2_000, keys=keys):
            req = await _request(pool, me, keys.public_key)
            quote = await _feedback(pool, me, req.id, "payment-required")
        await cw.pay_invoice(quote.bolt11, max_msat=2_000)  # provider down meanwhile
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=2_000, keys=keys) as provider:
            await wait_for(lambda: provider.store.status(req.id) == "done", what="served after restart")
        results = await pool.query([Filter.of(kinds=[6050], e=[req.id])], timeout=5)
    assert len(results) == 1 and ["amount", "2000", quote.bolt11] in results[0].tags
    assert await pw.balance() == 2_000 and len(openai_double.requests) == 1


async def test_unpaid_invoice_expires_and_closes_the_job(relay_url, openai_double, dev_ledger, tmp_path):
    pw = dev_ledger.wallet("provider")
    keys, me, db = Keys.generate(), Keys.generate(), tmp_path / "p.sqlite"
    async with RelayPool([relay_url], keys=me) as pool:
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=2_000, keys=keys,
                                 invoice_expiry_s=1) as provider:
            req = await _request(pool, me, keys.public_key)
            await _feedback(pool, me, req.id, "payment-required")
            await wait_for(lambda: provider.store.status(req.id) == "error", what="expiry closes the job")
            error = await _feedback(pool, me, req.id, "error")
            assert provider.store.get(req.id).error == "invoice expired"
    assert error.extra == "invoice expired" and not openai_double.requests


async def test_invoice_that_expired_while_the_provider_was_down_closes_the_job(relay_url, openai_double, dev_ledger,
                                                                               tmp_path):
    pw = dev_ledger.wallet("provider")
    keys, me, db = Keys.generate(), Keys.generate(), tmp_path / "p.sqlite"
    async with RelayPool([relay_url], keys=me) as pool:
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=2_000, keys=keys,
                                 invoice_expiry_s=3) as provider:
            req = await _request(pool, me, keys.public_key)
            await _feedback(pool, me, req.id, "payment-required")
            expires_at = provider.store.get(req.id).invoice_expires_at
        with JobStore(db) as store:
            assert store.get(req.id).status == "awaiting_payment"  # stopped before the expiry
        await wait_for(lambda: time.time() > expires_at, what="the invoice's expiry")
        async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=2_000, keys=keys,
                                 invoice_expiry_s=1) as provider:
            await wait_for(lambda: provider.store.status(req.id) == "error", what="closed after restart")
            assert provider.store.get(req.id).error == "invoice expired"
        error = await _feedback(pool, me, req.id, "error")
    assert error.extra == "invoice expired" and not openai_double.requests
