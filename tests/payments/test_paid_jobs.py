"""Paid jobs end to end: real relay, real Provider, real PylonClient, real dev-wallet ledger
(one SQLite file, two accounts), and the OpenAI server DOUBLE as the backend (the paid job
against the real vLLM is in test_paid_vllm.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from pylon.customer.ledger import Ledger
from pylon.ops.metrics import ProviderMetrics
from pylon.nostr.keys import Keys
from tests.payments.helpers import job_row, paid_provider, paying_customer

pytestmark = pytest.mark.timeout(120)


async def test_paid_job_moves_exactly_the_price(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    metrics = ProviderMetrics(process=False)
    db = tmp_path / "p.sqlite"
    stages = []
    # 1000 msat per job + 20 msat per 1k tokens of max_tokens=50 -> 1000 + ceil(1.0) = 1001 msat
    async with paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=1_000,
                             price_per_1k_tokens_msat=20, metrics=metrics) as provider:
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            outcome = await client.ask("pay me", max_tokens=50, timeout=30, on_progress=stages.append)
    price = 1_001
    assert outcome.text.endswith("pay me") and outcome.provider == provider.pubkey
    assert outcome.paid_msat == price and outcome.fee_msat == 0 and outcome.amount_msat == price
    assert await cw.balance() == 100_000 - price and await pw.balance() == price
    # the receipt, in the client's ledger under PYLON_HOME
    with Ledger() as ledger:
        (receipt,) = ledger.receipts()
    assert (receipt.job_id, receipt.provider, receipt.amount_msat, receipt.status) == (
        outcome.job_id, provider.pubkey, price, "paid")
    assert receipt.preimage and outcome.receipt["payment_hash"] == receipt.payment_hash
    assert [q["action"] for q in outcome.quotes] == ["paid"]
    # progress showed the quote and the payment, in order
    names = [s.stage for s in stages]
    assert names.index("quoted") < names.index("payment") < names.index("done")
    assert [s.amount_msat for s in stages if s.stage in ("quoted", "payment")] == [price, price]
    # the provider recorded invoice, payment and result; the bid tag said what we agreed to pay
    row = job_row(db, outcome.job_id)
    assert row.status == "done" and row.amount_msat == price and row.paid_at is not None
    assert row.payment_hash == receipt.payment_hash and row.invoice == receipt.bolt11
    request_tags = json.loads(row.request_json)["tags"]
    assert ["bid", "5000"] in request_tags and any(t[0] == "pylon-nonce" for t in request_tags)
    assert provider.store is None  # stopped
    assert metrics.earned_msat._value.get() == price
    assert openai_double.requests[0]["max_tokens"] == 50


async def test_free_provider_still_serves_a_client_with_a_wallet(relay_url, openai_double, dev_ledger, tmp_path):
    from tests.e2e.helpers import serving

    dev_ledger.fund("customer", 10_000)
    cw = dev_ledger.wallet("customer")
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite"):
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            outcome = await client.ask("free?", timeout=30)
    assert outcome.paid_msat == 0 and outcome.receipt is None and await cw.balance() == 10_000


async def test_bid_below_the_price_gets_an_error_that_says_the_price(relay_url, openai_double, dev_ledger, tmp_path):
    """The provider's error names its price; the client reports it as its own refusal (issue 10:
    the message names the flag that raises the bid), nothing paid."""
    from pylon.customer.invoice_check import PaymentRefused

    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=3_000) as p:
        async with paying_customer(relay_url, cw) as client:
            with pytest.raises(PaymentRefused, match="price is 3000 msat, above your bid of 2000 msat.*--bid-msat"):
                await client.ask("cheap", bid_msat=2_000, provider=p.pubkey, timeout=30)
    assert await cw.balance() == 100_000 and not openai_double.requests


async def test_announcement_carries_the_prices(relay_url, openai_double, dev_ledger, tmp_path):
    from pylon.jobs.nip89 import discover
    from pylon.relay.pool import RelayPool

    pw = dev_ledger.wallet("provider")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=1_500,
                             price_per_1k_tokens_msat=7, max_tokens_cap=256) as provider:
        async with RelayPool([relay_url]) as pool:
            (info,) = [i for i in await discover(pool) if i.pubkey == provider.pubkey]
    assert (info.price_msat, info.price_per_1k_tokens_msat, info.max_tokens) == (1_500, 7, 256)
    assert info.quote_msat(100) == 1_500 + 1 and info.quote_msat(None) == 1_500 + 2  # ceil(0.7), ceil(1.792)
    assert info.quote_msat(10_000) == info.quote_msat(256)  # capped like the provider caps it


async def test_many_paid_jobs_wait_for_payment_at_once(relay_url, openai_double, dev_ledger, tmp_path):
    """20 paid jobs from 20 customers at once with a backend concurrency of 2: all are invoiced,
    paid and served; each customer pays once and the provider earns 20 prices."""
    pw = dev_ledger.wallet("provider")
    wallets = []
    for i in range(20):
        dev_ledger.fund(f"c{i}", 10_000)
        wallets.append(dev_ledger.wallet(f"c{i}"))
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=900,
                             concurrency=2) as provider:
        async def one(i):
            async with paying_customer(relay_url, wallets[i], ledger_path=tmp_path / f"r{i}.sqlite") as client:
                return await client.ask(f"job {i}", provider=provider.pubkey, timeout=60)
        outcomes = await asyncio.gather(*(one(i) for i in range(20)))
    assert all(o.paid_msat == 900 for o in outcomes) and len({o.job_id for o in outcomes}) == 20
    assert [await w.balance() for w in wallets] == [9_100] * 20 and await pw.balance() == 18_000


async def test_client_ledger_keeps_one_receipt_per_job_across_asks(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=700):
        async with paying_customer(relay_url, cw, keys=Keys.generate()) as client:
            a = await client.ask("same", timeout=30)
            b = await client.ask("same", timeout=30)
            assert client.spent_msat == 1_400
    assert a.job_id != b.job_id and await pw.balance() == 1_400
    with Ledger() as ledger:
        assert sorted(r.job_id for r in ledger.receipts()) == sorted([a.job_id, b.job_id])
