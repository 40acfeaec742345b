"""Metrics redesign (issue 18): after a scripted mix of outcomes on a real priced provider (real
relay, dev-wallet ledger, OpenAI double backend), every outcome counter on /metrics equals the
job store's own count, earnings count delivered jobs only, and the counters survive a restart.
Also /livez, the info/price/backend_up gauges, and a wallet check that never asks for a balance."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from pylon.errors import PylonError
from pylon.jobs.nip90 import JobRequest
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from pylon.ops.health import serve_monitor, wallet_check
from pylon.ops.metrics import ProviderMetrics
from pylon.provider.jobstore import JobStore
from tests.e2e.helpers import customer
from tests.ops.test_provider_metrics import samples
from tests.ops.test_serve_lifecycle import INVOICE_FIRST
from tests.payments.helpers import paid_provider, paying_customer

pytestmark = pytest.mark.timeout(150)
PRICE = 1_000


def _finished(s: dict, outcome: str, model: str) -> float:
    return s.get(("pylon_provider_jobs_finished_total", (("model", model), ("outcome", outcome))), 0.0)


async def test_each_counter_equals_the_job_store(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    db = tmp_path / "p.sqlite"
    model = openai_double.model
    keys = Keys.generate()
    kwargs = dict(price_msat=PRICE, metrics=ProviderMetrics(), keys=keys, invoice_expiry_s=8, paid_job_deadline_s=0.5)
    async with paid_provider(relay_url, openai_double.base_url, db, pw, **kwargs) as provider:
        async with serve_monitor(provider) as mon, httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(mon.url + "/livez")).text == "ok\n"
            async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
                await client.ask("q0", timeout=30, provider=keys.public_key)  # delivered and paid
                streamed = client.stream("q1", timeout=30, provider=keys.public_key)  # the same, streamed
                assert "".join([d async for d in streamed]).endswith("q1")
                with pytest.raises(PylonError):  # refused before a quote: model not served
                    await client.ask("wrong model", model="no-such-model", timeout=30, provider=keys.public_key)
                openai_double.fail_next(50)  # paid, then the backend fails: refund offered
                with pytest.raises(PylonError):
                    await client.ask("paid then failed", timeout=30, provider=keys.public_key)
                openai_double.fail_next(0)
                with pytest.raises(PylonError):  # refused before a quote: the bid is below the price
                    await client.ask("too dear", timeout=30, provider=keys.public_key, bid_msat=10)
            async with customer(relay_url) as walletless:
                with pytest.raises(PylonError):  # gets the invoice, cannot pay, cancels the job (kind 5)
                    await walletless.ask("no wallet", timeout=30, provider=keys.public_key)
            async with RelayPool([relay_url]) as pool:  # a customer who goes quiet: the invoice expires
                await pool.publish(JobRequest.from_prompt("quiet", providers=[keys.public_key]).to_event(Keys.generate()))
            with JobStore(db) as store:
                while store.counts().get("error", 0) < 4:  # the expiry is the provider's to record
                    await asyncio.sleep(0.1)
            s = samples((await http.get(mon.url + "/metrics")).text)
            # stage histograms: every timed job once, at its final state
            assert s[("pylon_provider_job_duration_seconds_count", (("outcome", "success"),))] == 2
            assert s[("pylon_provider_payment_wait_seconds_count", ())] == 3  # the three paid jobs
            assert s[("pylon_provider_queue_wait_seconds_count", ())] == 3  # each paid job went to processing
            # first token: streamed jobs only (the others make one non-streamed backend call)
            assert s[("pylon_provider_time_to_first_token_seconds_count", (("model", model),))] == 1
            info = [k for k in s if k[0] == "pylon_provider_info"]
            assert info and dict(info[0][1])["npub"] == keys.npub
            assert s[("pylon_provider_price_msat", (("kind", "per_job"),))] == PRICE
            assert s[("pylon_provider_backend_up", ())] == 1 and s[("pylon_provider_accepting", ())] == 1

    with JobStore(db) as store:
        counts = store.counts()
        rows = store.jobs_in(["done", "error", "cancelled"])
    assert s[("pylon_provider_jobs_received_total", ())] == sum(counts.values()) == 7
    assert _finished(s, "success", model) == counts["done"] == 2
    errors = sum(v for (name, labels), v in s.items() if name == "pylon_provider_jobs_finished_total"
                 and dict(labels)["outcome"] in ("error", "paid_error", "expired", "rejected"))
    assert errors == counts["error"] == 4
    assert _finished(s, "cancelled", model) == counts["cancelled"] == 1
    assert _finished(s, "rejected", "-") == 2 and _finished(s, "expired", model) == 1
    assert _finished(s, "paid_error", model) == 1
    delivered_paid = sum(r.amount_msat for r in rows if r.status == "done" and r.paid_at is not None)
    assert s[("pylon_provider_earned_msat_total", (("model", model),))] == delivered_paid == 2 * PRICE
    paid = sum(r.amount_msat for r in rows if r.paid_at is not None)
    assert s[("pylon_provider_paid_msat_total", (("model", model),))] == paid == 3 * PRICE

    # a restart keeps the lifetime counters (they live in the store, not in the process)
    async with paid_provider(relay_url, openai_double.base_url, db, pw, **{**kwargs, "metrics": ProviderMetrics()}) \
            as again:
        async with serve_monitor(again) as mon, httpx.AsyncClient(timeout=10) as http:
            s2 = samples((await http.get(mon.url + "/metrics")).text)
    assert _finished(s2, "success", model) == 2 and s2[("pylon_provider_jobs_received_total", ())] == 7
    with JobStore(db) as store:
        refunded = sum(r.refund_msat or 0 for r in store.refunds_in("refunded"))
    assert s2[("pylon_provider_refunded_msat_total", ())] == refunded
    assert await pw.balance() == paid - refunded  # the wallet: received minus refunds


class ReceiveOnlyWallet:
    """A DOUBLE of a receive-only NWC connection: balance is refused, invoices work (real dev wallet)."""

    def __init__(self, real):
        self.real, self.balance_calls, self.lookups = real, 0, 0

    async def balance(self) -> int:
        from wallet.errors import Unauthorized

        self.balance_calls += 1
        raise Unauthorized("RESTRICTED: get_balance is not allowed on this connection")

    async def lookup_invoice(self, payment_hash: str):
        self.lookups += 1
        return await self.real.lookup_invoice(payment_hash)


async def test_wallet_check_works_receive_only_and_is_cached(dev_ledger):
    wallet = ReceiveOnlyWallet(dev_ledger.wallet("provider"))
    check = wallet_check(wallet, ttl_s=3600)  # type: ignore[arg-type]
    for _ in range(5):
        result = await check()
        assert result.ok, result.detail
    assert wallet.balance_calls == 0 and wallet.lookups == 1
