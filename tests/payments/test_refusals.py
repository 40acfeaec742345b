"""A lying provider, scripted: real keys, real relay, real invoices from its own dev-wallet
account in the customer's ledger (so any payment really could go through). Each lie is
refused with its reason code and the customer's balance does not move."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from pylon.customer.invoice_check import PaymentRefused
from pylon.customer.ledger import Ledger
from tests.payments.helpers import ScriptedProvider

pytestmark = pytest.mark.timeout(60)
FUNDS = 50_000


async def _refused(relay_url, dev_ledger, script, *, client_kwargs=None, ask_kwargs=None):
    """Run one targeted ask against a scripted provider; return the refusal and the customer wallet."""
    from tests.payments.helpers import paying_customer

    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("liar")
    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: script(liar, req))
        async with paying_customer(relay_url, cw, **(client_kwargs or {})) as client:
            with pytest.raises(PaymentRefused) as info:
                await client.ask("lie to me", provider=liar.pubkey, timeout=20, **(ask_kwargs or {}))
    assert await cw.balance() == FUNDS and await pw.balance() == 0
    with Ledger() as ledger:
        assert all(r.status == "failed" for r in ledger.receipts())  # no live receipt: nothing paid
    return info.value


def _quote(amount_tag, invoice_msat, *, expiry_s=600):
    async def script(liar, req):
        inv = await liar.wallet.make_invoice(invoice_msat, f"job {req.id}", expiry_s)
        await liar.feedback(req, "payment-required", amount_msat=amount_tag, bolt11=inv.bolt11)
    return script


async def test_amount_tag_and_invoice_disagree(relay_url, dev_ledger):
    exc = await _refused(relay_url, dev_ledger, _quote(1_000, 9_000))
    assert exc.reason == "amount_mismatch" and "9000" in str(exc) and "1000" in str(exc)


async def test_invoice_above_the_bid(relay_url, dev_ledger):
    exc = await _refused(relay_url, dev_ledger, _quote(3_000, 3_000), ask_kwargs={"bid_msat": 2_000})
    assert exc.reason == "above_bid"


async def test_invoice_above_the_per_job_cap(relay_url, dev_ledger):
    exc = await _refused(relay_url, dev_ledger, _quote(3_000, 3_000), client_kwargs={"max_msat": 2_500})
    assert exc.reason == "above_max"


async def test_invoice_above_the_session_budget(relay_url, dev_ledger):
    exc = await _refused(relay_url, dev_ledger, _quote(3_000, 3_000), client_kwargs={"budget_msat": 2_999})
    assert exc.reason == "above_budget"


async def test_invoice_above_the_daily_budget(relay_url, dev_ledger):
    exc = await _refused(relay_url, dev_ledger, _quote(3_000, 3_000), client_kwargs={"daily_budget_msat": 1_000})
    assert exc.reason == "above_budget"


async def test_expired_invoice(relay_url, dev_ledger):
    exc = await _refused(relay_url, dev_ledger, _quote(3_000, 3_000, expiry_s=1))
    assert exc.reason == "expired"


async def test_invoice_on_another_network(relay_url, dev_ledger):
    from wallet.bolt11_codec import encode_bolt11

    async def script(liar, req):
        mainnet = encode_bolt11(node_secret_hex=secrets.token_hex(32), network="bitcoin", amount_msat=3_000,
                                payment_hash=secrets.token_hex(32), payment_secret=secrets.token_hex(32),
                                memo="mainnet", expiry_s=600)
        await liar.feedback(req, "payment-required", amount_msat=3_000, bolt11=mainnet)

    exc = await _refused(relay_url, dev_ledger, script)
    assert exc.reason == "wrong_network" and "bitcoin" in str(exc) and "regtest" in str(exc)


async def test_garbage_invoice(relay_url, dev_ledger):
    async def script(liar, req):
        await liar.feedback(req, "payment-required", amount_msat=3_000, bolt11="lnbcrt30n1notaninvoice")

    exc = await _refused(relay_url, dev_ledger, script)
    assert exc.reason == "malformed"


async def test_the_same_invoice_for_a_second_job_is_not_paid_again(relay_url, dev_ledger):
    """The provider reuses job 1's (paid) invoice for job 2: refused as already paid."""
    from tests.payments.helpers import paying_customer

    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("liar")
    first: dict = {}

    async def script(liar, req):
        if "bolt11" not in first:
            inv = await liar.wallet.make_invoice(3_000, "job 1", 600)
            first["bolt11"], first["hash"] = inv.bolt11, inv.payment_hash
            await liar.feedback(req, "payment-required", amount_msat=3_000, bolt11=inv.bolt11)
            while (await liar.wallet.lookup_invoice(inv.payment_hash)).value != "settled":
                await asyncio.sleep(0.02)
            await liar.result(req, "honest answer", amount_msat=3_000)
        else:
            await liar.feedback(req, "payment-required", amount_msat=3_000, bolt11=first["bolt11"])

    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: script(liar, req))
        async with paying_customer(relay_url, cw) as client:
            ok = await client.ask("one", provider=liar.pubkey, timeout=20)
            with pytest.raises(PaymentRefused) as info:
                await client.ask("two", provider=liar.pubkey, timeout=20)
    assert ok.text == "honest answer" and ok.paid_msat == 3_000
    assert info.value.reason == "already_paid"
    assert await cw.balance() == FUNDS - 3_000 and await pw.balance() == 3_000


async def test_untargeted_refusal_reports_the_reason_after_the_grace(relay_url, dev_ledger):
    """Not targeted: the client waits for other providers, then raises the refusal."""
    from tests.payments.helpers import paying_customer

    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("liar")
    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: _quote(3_000, 3_000)(liar, req))
        async with paying_customer(relay_url, cw, max_msat=1_000) as client:
            with pytest.raises(PaymentRefused, match="above_max"):
                await client.ask("anyone?", timeout=20, error_grace_s=0.2)
    assert await cw.balance() == FUNDS


async def test_no_wallet_refuses_a_real_priced_provider(relay_url, openai_double, dev_ledger, tmp_path):
    from pylon.customer.client import PaymentRefused as NoWallet
    from tests.e2e.helpers import customer
    from tests.payments.helpers import paid_provider

    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("p"),
                             price_msat=1_000) as provider:
        async with customer(relay_url) as client:
            with pytest.raises(NoWallet, match="1000 msat.*no wallet configured"):
                await client.ask("x", provider=provider.pubkey, timeout=20)
    assert not openai_double.requests


async def test_a_result_for_someone_elses_job_is_ignored(relay_url, dev_ledger):
    """The liar answers our job with a result tagged for another job: the ask times out, unpaid."""
    from pylon.errors import JobError
    from pylon.jobs.nip90 import JobRequest
    from tests.payments.helpers import paying_customer

    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("liar")

    async def script(liar, req):
        other = JobRequest.from_prompt("someone else")
        other.to_event(liar.keys)
        other.customer = req.customer
        await liar.result(other, "not yours")

    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: script(liar, req))
        async with paying_customer(relay_url, cw) as client:
            with pytest.raises(JobError, match="no provider answered"):  # the stray result was never routed to us
                await client.ask("mine", provider=liar.pubkey, timeout=2)
    assert await cw.balance() == FUNDS
