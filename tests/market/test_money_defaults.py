"""Money-safe defaults (issue 10, rule 1): a wallet with no cap given still has a per-job cap
and a daily budget; a quote above them is refused, nothing paid, with the flag and config key
that raise it named; piped output says what was paid. Real relay, real dev-wallet accounts,
real `pylon` processes for the command-line checks."""

from __future__ import annotations

import json

import pytest

from pylon.customer.defaults import DEFAULT_DAILY_BUDGET_MSAT, DEFAULT_MAX_MSAT
from pylon.customer.invoice_check import PaymentRefused
from tests.e2e.test_cli_jobs import _pylon
from tests.payments.helpers import ScriptedProvider, paid_provider, paying_customer

pytestmark = pytest.mark.timeout(120)
FUNDS = 500_000


async def test_over_priced_provider_with_no_cap_given_is_refused_from_the_cli(relay_url, openai_double,
                                                                              dev_ledger, tmp_path):
    """The report: an 8-token ask to a provider quoting 90,000 msat, --wallet and no --max-msat."""
    dev_ledger.fund("customer", FUNDS)
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("provider"),
                             price_msat=90_000):
        code, out, err = await _pylon("ask", "8 tokens please", "--relay", relay_url, "--max-tokens", "8",
                                      "--wallet", dev_ledger.uri("customer"), "--timeout", "20",
                                      home=tmp_path / "customer")
    assert code == 5 and out == "", (code, out, err)
    flat = " ".join(err.split())
    assert "90000 msat" in flat and f"per-job cap of {DEFAULT_MAX_MSAT} msat" in flat, err
    assert "--max-msat" in flat and "max_msat" in flat and "nothing was paid" in flat, err
    assert await dev_ledger.wallet("customer").balance() == FUNDS
    assert await dev_ledger.wallet("provider").balance() == 0
    assert not openai_double.requests  # the job never ran


async def test_a_quote_that_ignores_the_bid_is_refused_by_the_default_cap(relay_url, dev_ledger):
    """A provider that ignores the bid tag and invoices 90,000 msat anyway: the invoice check refuses."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("greedy")

    async def script(greedy, req):
        assert req.bid_msat == DEFAULT_MAX_MSAT  # the default cap travels as the bid tag
        inv = await greedy.wallet.make_invoice(90_000, f"job {req.id}", 600)
        await greedy.feedback(req, "payment-required", amount_msat=90_000, bolt11=inv.bolt11)

    async with ScriptedProvider(relay_url, pw) as greedy:
        greedy.serve(lambda req: script(greedy, req))
        async with paying_customer(relay_url, cw) as client:  # no max_msat given
            assert client.max_msat == DEFAULT_MAX_MSAT and client.daily_budget_msat == DEFAULT_DAILY_BUDGET_MSAT
            with pytest.raises(PaymentRefused) as info:
                await client.ask("pricey", provider=greedy.pubkey, timeout=20)
    assert info.value.reason == "above_max" and "--max-msat" in str(info.value)
    assert await cw.balance() == FUNDS and await pw.balance() == 0


async def test_the_default_daily_budget_stops_many_small_payments(relay_url, openai_double, dev_ledger, tmp_path):
    """Jobs at the cap add up: once the default daily budget is spent the next quote is refused."""
    dev_ledger.fund("customer", FUNDS)
    cw = dev_ledger.wallet("customer")
    price = DEFAULT_MAX_MSAT  # exactly at the cap: allowed per job
    paid_jobs = DEFAULT_DAILY_BUDGET_MSAT // price
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("provider"),
                             price_msat=price) as provider:
        async with paying_customer(relay_url, cw) as client:
            for i in range(paid_jobs):
                assert (await client.ask(f"job {i}", provider=provider.pubkey, timeout=20)).paid_msat == price
            with pytest.raises(PaymentRefused) as info:
                await client.ask("one too many", provider=provider.pubkey, timeout=20)
    assert info.value.reason == "above_budget" and "--daily-budget-msat" in str(info.value)
    assert await cw.balance() == FUNDS - DEFAULT_DAILY_BUDGET_MSAT


async def test_piped_and_json_output_say_what_was_paid(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUNDS)
    home = tmp_path / "customer"
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("provider"),
                             price_msat=1_500) as provider:
        code, out, err = await _pylon("ask", "piped", "--relay", relay_url, "--wallet", dev_ledger.uri("customer"),
                                      "--timeout", "20", home=home)
        assert code == 0, err
        assert "paid 1500 msat" in err and provider.keys.npub in err.replace("\n", "")  # stdout: the answer alone
        assert "paid" not in out
        code, out, err = await _pylon("ask", "as json", "--relay", relay_url, "--wallet", dev_ledger.uri("customer"),
                                      "--timeout", "20", "--json", home=home)
        assert code == 0, err
        data = json.loads(out)
        assert data["paid_msat"] == 1_500 and data["receipt"]["amount_msat"] == 1_500


async def test_config_show_lists_the_money_defaults(tmp_path):
    code, out, err = await _pylon("config", "show", "--json", home=tmp_path / "h")
    assert code == 0, err
    text = json.dumps(json.loads(out))
    assert "max_msat" in text and str(DEFAULT_MAX_MSAT) in text
    assert "daily_budget_msat" in text and str(DEFAULT_DAILY_BUDGET_MSAT) in text


async def test_an_amount_without_an_invoice_cannot_be_paid(relay_url, dev_ledger):
    """nostrdvm asks for a zap: `["amount", msat]` with no bolt11. Clear reason, nothing paid."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("zapper")

    async def script(zapper, req):
        await zapper.feedback(req, "payment-required", amount_msat=2_000)

    async with ScriptedProvider(relay_url, pw) as zapper:
        zapper.serve(lambda req: script(zapper, req))
        async with paying_customer(relay_url, cw) as client:
            with pytest.raises(PaymentRefused) as info:
                await client.ask("zap?", provider=zapper.pubkey, timeout=20)
    assert info.value.reason == "no_invoice" and "cannot pay this provider" in str(info.value)
    assert await cw.balance() == FUNDS
