"""Paid jobs with the other wallets: the customer paying through NWC (our NwcWallet against
`pylon wallet serve-nwc`'s NwcService over the relay), both sides on a real LNbits, and the
provider invoicing through NWC."""

from __future__ import annotations

import pytest

from pylon.customer.ledger import Ledger
from tests.payments.helpers import paid_provider, paying_customer

pytestmark = pytest.mark.timeout(180)


@pytest.mark.embedded_relay
async def test_customer_pays_through_nwc(relay_url, openai_double, dev_ledger, tmp_path):
    from wallet import open_wallet
    from wallet.nwc_service import NwcService

    dev_ledger.fund("customer", 60_000)
    pw = dev_ledger.wallet("provider")
    service = NwcService(dev_ledger.wallet("customer"), [relay_url], budget_msat=20_000)
    conn = service.new_connection(name="pylon ask")
    async with service.running():
        nwc = open_wallet(service.uri_for(conn))  # PylonClient.start connects it (network from get_info)
        try:
            async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw,
                                     price_msat=1_500, price_per_1k_tokens_msat=100) as provider:
                async with paying_customer(relay_url, nwc, max_msat=5_000) as client:
                    assert nwc.network == "regtest"
                    outcome = await client.ask("via nwc", max_tokens=20, timeout=60)
        finally:
            await nwc.aclose()
    price = 1_502
    assert outcome.paid_msat == price and outcome.provider == provider.pubkey
    assert await dev_ledger.wallet("customer").balance() == 60_000 - price and await pw.balance() == price
    assert conn.spent_msat == price  # the NWC connection's budget was charged once
    with Ledger() as ledger:
        (r,) = ledger.receipts()
    assert r.status == "paid" and r.preimage and r.amount_msat == price


async def _ask_a_provider_on_nwc(service, relay_url, openai_double, dev_ledger, tmp_path, prompt, **client_kwargs):
    """One ask to a provider (2,000 msat) whose wallet is a connection of `service`, paid by the
    dev account "customer"; the outcome, and whether that connection offered hold invoices."""
    from wallet import connect_wallet

    async with service.running():
        nwc = await connect_wallet(service.uri_for(service.new_connection(name="pylon serve")))
        try:
            async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", nwc,
                                     price_msat=2_000):
                async with paying_customer(relay_url, dev_ledger.wallet("customer"), **client_kwargs) as client:
                    return await client.ask(prompt, timeout=60), await nwc.hold_invoices_offered()
        finally:
            await nwc.aclose()


def _woken_by_payment_received(service) -> None:
    """The provider quoted first (make_invoice) and learnt of the payment by the notification:
    polling from 10 ms would have asked lookup_invoice several times."""
    assert service.stats["by_method"].get("make_invoice") == 1
    assert service.stats["by_method"].get("lookup_invoice", 0) <= 1
    assert service.stats["notifications"] == 1


@pytest.mark.embedded_relay
async def test_provider_invoices_through_nwc(relay_url, openai_double, dev_ledger, tmp_path):
    from wallet.nwc_service import NwcService

    dev_ledger.fund("customer", 60_000)
    service = NwcService(dev_ledger.wallet("provider"), [relay_url])
    outcome, holds = await _ask_a_provider_on_nwc(service, relay_url, openai_double, dev_ledger, tmp_path,
                                                  "provider on nwc")
    assert outcome.paid_msat == 2_000 and await dev_ledger.wallet("provider").balance() == 2_000
    assert holds  # offered, but this customer pays first (paying_customer: no key delivery)
    _woken_by_payment_received(service)


@pytest.mark.embedded_relay
async def test_a_key_asked_of_a_provider_on_nwc_without_hold_invoices_is_paid_first(relay_url, openai_double,
                                                                                    dev_ledger, tmp_path):
    """The customer asks to pay for the key, but the provider's NWC wallet issues no hold
    invoices: no key is sold; the provider quotes first and is woken by `payment_received`."""
    from wallet.nwc_service import NwcService

    dev_ledger.fund("customer", 60_000)
    shop = dev_ledger.wallet("provider")

    async def no_holds() -> bool:
        return False

    shop.hold_invoices_offered = no_holds  # type: ignore[method-assign]  # as NWC wallets without them
    service = NwcService(shop, [relay_url])
    outcome, holds = await _ask_a_provider_on_nwc(service, relay_url, openai_double, dev_ledger, tmp_path,
                                                  "provider on nwc, key asked", key_delivery=True)
    assert not holds
    assert outcome.paid_msat == 2_000 and await shop.balance() == 2_000 and outcome.delivery != "key"
    _woken_by_payment_received(service)


@pytest.mark.lnbits
async def test_both_sides_on_lnbits(lnbits, relay_url, openai_double, tmp_path):
    """LNbits' FakeWallet only settles its own invoices, so both accounts live on the same
    LNbits; its invoices are whole sats on the bitcoin network (the client's wallet network)."""
    from wallet import open_wallet

    customer, provider_wallet = open_wallet(lnbits.uri(lnbits.alice)), open_wallet(lnbits.uri(lnbits.bob))
    try:
        before_c, before_p = await customer.balance(), await provider_wallet.balance()
        # 1000 msat + ceil(16 * 100 / 1000) = 1002 msat, rounded up to whole sats: 2000 msat
        async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", provider_wallet,
                                 price_msat=1_000, price_per_1k_tokens_msat=100) as provider:
            async with paying_customer(relay_url, customer, max_msat=5_000) as client:
                outcome = await client.ask("lnbits pays", max_tokens=16, timeout=60)
        assert outcome.paid_msat == 2_000 and outcome.provider == provider.pubkey
        assert await provider_wallet.balance() - before_p == 2_000
        assert before_c - await customer.balance() == 2_000 + outcome.fee_msat
        with Ledger() as ledger:
            (r,) = ledger.receipts()
        assert r.status == "paid" and r.bolt11.startswith("lnbc") and r.preimage
    finally:
        await customer.aclose()
        await provider_wallet.aclose()
