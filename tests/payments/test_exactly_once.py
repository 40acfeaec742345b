"""Exactly one payment per job, however many quotes arrive; only the paid provider's result
counts; a paid provider that never delivers is reported with the receipt kept; budgets."""

from __future__ import annotations

import asyncio

import pytest

from pylon.customer.payments import PaidNoResult
from pylon.customer.invoice_check import PaymentRefused
from pylon.customer.ledger import Ledger
from pylon.nostr.keys import Keys
from tests.payments.helpers import ScriptedProvider, job_row, paid_provider, paying_customer

pytestmark = pytest.mark.timeout(90)


async def _settled(wallet, payment_hash):
    while (await wallet.lookup_invoice(payment_hash)).value != "settled":
        await asyncio.sleep(0.02)


async def test_two_providers_quote_one_is_paid(relay_url, openai_double, dev_ledger, tmp_path):
    openai_double.latency_s = 0.5  # both quotes are in before the paid provider's result
    dev_ledger.fund("customer", 100_000)
    cw, w1, w2 = dev_ledger.wallet("customer"), dev_ledger.wallet("p1"), dev_ledger.wallet("p2")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "1.sqlite", w1, price_msat=1_000) as p1, \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "2.sqlite", w2, price_msat=1_000) as p2:
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            outcome = await client.ask("who wants it?", timeout=30)
            # the other provider's quote must have arrived too (relay order), and been ignored
    balances = {p1.pubkey: await w1.balance(), p2.pubkey: await w2.balance()}
    assert await cw.balance() == 99_000 and sorted(balances.values()) == [0, 1_000]
    assert balances[outcome.provider] == 1_000
    actions = sorted(q["action"] for q in outcome.quotes)
    assert actions == ["ignored", "paid"], outcome.quotes
    unpaid_db = tmp_path / ("2.sqlite" if outcome.provider == p1.pubkey else "1.sqlite")
    assert job_row(unpaid_db, outcome.job_id).status == "awaiting_payment"  # it never ran unpaid
    assert len(openai_double.requests) == 1
    with Ledger() as ledger:
        assert [r.status for r in ledger.receipts()] == ["paid"]


async def test_repeated_payment_required_is_paid_once(relay_url, dev_ledger):
    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("liar")

    async def script(liar, req):
        inv = await liar.wallet.make_invoice(2_000, f"job {req.id}", 600)
        await liar.feedback(req, "payment-required", amount_msat=2_000, bolt11=inv.bolt11)
        # (an identical event would be the same event id, deduped by the relay: say it differently)
        await liar.feedback(req, "payment-required", extra="reminder", amount_msat=2_000, bolt11=inv.bolt11)
        again = await liar.wallet.make_invoice(2_000, f"job {req.id} again", 600)  # a fresh invoice: still no
        await liar.feedback(req, "payment-required", amount_msat=2_000, bolt11=again.bolt11)
        await _settled(liar.wallet, inv.payment_hash)
        await liar.result(req, "paid once", amount_msat=2_000)

    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: script(liar, req))
        async with paying_customer(relay_url, cw) as client:
            outcome = await client.ask("how many times?", provider=liar.pubkey, timeout=20)
    assert outcome.text == "paid once" and outcome.paid_msat == 2_000
    assert [q["action"] for q in outcome.quotes] == ["paid", "repeat", "repeat"]
    assert await cw.balance() == 48_000 and await pw.balance() == 2_000


async def test_resubmitted_job_is_not_paid_twice(relay_url, dev_ledger):
    """The same job id (a republished request) quoted again in a new session: already paid."""
    from pylon.customer.payments import ClientPayments, JobPayment

    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("shop")
    job_id = "ab" * 32
    first = ClientPayments(cw)
    inv = await pw.make_invoice(1_500, "job", 600)
    await first.on_payment_required(JobPayment(), job_id=job_id, provider="p", amount_msat=1_500,
                                    bolt11=inv.bolt11, bid_msat=None)
    first.close()
    second = ClientPayments(cw)  # a new session, same PYLON_HOME ledger
    await second.start()
    inv2 = await pw.make_invoice(1_500, "job, again", 600)
    with pytest.raises(PaymentRefused) as info:
        await second.on_payment_required(JobPayment(), job_id=job_id, provider="p", amount_msat=1_500,
                                         bolt11=inv2.bolt11, bid_msat=None)
    second.close()
    assert info.value.reason == "already_paid" and await cw.balance() == 48_500


async def test_paid_provider_that_never_delivers_is_reported(relay_url, dev_ledger):
    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("thief")

    async def script(liar, req):
        inv = await liar.wallet.make_invoice(4_000, f"job {req.id}", 600)
        await liar.feedback(req, "payment-required", amount_msat=4_000, bolt11=inv.bolt11)
        await _settled(liar.wallet, inv.payment_hash)
        await liar.feedback(req, "processing")

    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: script(liar, req))
        async with paying_customer(relay_url, cw) as client:
            with pytest.raises(PaidNoResult) as info:
                await client.ask("pay and wait", provider=liar.pubkey, timeout=2)
    msg = str(info.value)
    assert f"paid 4000 msat to provider {liar.keys.npub}" in msg and "no result" in msg and "receipt" in msg
    assert info.value.receipt is not None and info.value.receipt.status == "paid"
    with Ledger() as ledger:
        (r,) = ledger.receipts()
    assert (r.status, r.amount_msat, r.provider) == ("paid", 4_000, liar.pubkey) and r.preimage
    assert await cw.balance() == 46_000


async def test_paid_provider_error_and_other_results_do_not_count(relay_url, dev_ledger):
    """Paid provider A reports an error; provider B (unpaid) sends a result: PaidNoResult, not B's text."""
    dev_ledger.fund("customer", 50_000)
    cw = dev_ledger.wallet("customer")
    gate = asyncio.Event()

    async def paid_then_error(liar, req):
        inv = await liar.wallet.make_invoice(1_000, f"job {req.id}", 600)
        await liar.feedback(req, "payment-required", amount_msat=1_000, bolt11=inv.bolt11)
        await _settled(liar.wallet, inv.payment_hash)
        gate.set()
        await asyncio.sleep(0.3)  # let the free result land first (ordering is all this wait is for)
        await liar.feedback(req, "error", extra="GPU on fire")

    async def free_result_after_payment(other, req):
        await gate.wait()
        await other.result(req, "unpaid free answer")

    async with ScriptedProvider(relay_url, dev_ledger.wallet("a")) as a, \
            ScriptedProvider(relay_url, dev_ledger.wallet("b")) as b:
        a.serve(lambda req: paid_then_error(a, req))
        b.serve(lambda req: free_result_after_payment(b, req))
        async with paying_customer(relay_url, cw) as client:
            with pytest.raises(PaidNoResult, match="GPU on fire"):
                await client.ask("anyone", timeout=20)
    assert await cw.balance() == 49_000


async def test_session_budget_stops_the_third_job(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=1_000) as p:
        async with paying_customer(relay_url, cw, budget_msat=2_500) as client:
            await client.ask("1", provider=p.pubkey, timeout=30)
            await client.ask("2", provider=p.pubkey, timeout=30)
            with pytest.raises(PaymentRefused, match="above_budget"):
                await client.ask("3", provider=p.pubkey, timeout=30)
        # a new session has its own budget
        async with paying_customer(relay_url, cw, budget_msat=2_500) as client:
            await client.ask("4", provider=p.pubkey, timeout=30)
    assert await cw.balance() == 97_000 and await pw.balance() == 3_000
    assert len(openai_double.requests) == 3


async def test_daily_budget_spans_sessions(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=1_000) as p:
        async with paying_customer(relay_url, cw, daily_budget_msat=1_500, keys=Keys.generate()) as client:
            await client.ask("today 1", provider=p.pubkey, timeout=30)
        async with paying_customer(relay_url, cw, daily_budget_msat=1_500, keys=Keys.generate()) as client:
            with pytest.raises(PaymentRefused, match="above_budget"):
                await client.ask("today 2", provider=p.pubkey, timeout=30)
    assert await cw.balance() == 99_000
