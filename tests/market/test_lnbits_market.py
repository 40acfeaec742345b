"""The open market's rules with a real LNbits (FakeWallet) on both sides: the default cap
refuses an over-priced provider with nothing paid, and a customer asking for pay-for-the-key
falls back to pay-first with a provider whose wallet can sell no key (LNbits: no chosen
preimage; hold invoices only on an LND funding source, see docs/WALLETS.md), paying once within
the caps."""

from __future__ import annotations

import pytest

from pylon.customer.invoice_check import PaymentRefused
from pylon.customer.ledger import Ledger
from tests.payments.helpers import paid_provider, paying_customer

pytestmark = [pytest.mark.timeout(180), pytest.mark.lnbits]


async def test_lnbits_default_cap_and_pay_first_fallback(lnbits, relay_url, openai_double, tmp_path, caplog):
    import logging

    from wallet import open_wallet

    caplog.set_level(logging.INFO, logger="pylon.provider.keysale")

    customer, provider_wallet = open_wallet(lnbits.uri(lnbits.alice)), open_wallet(lnbits.uri(lnbits.bob))
    try:
        before_c, before_p = await customer.balance(), await provider_wallet.balance()
        async with paid_provider(relay_url, openai_double.base_url, tmp_path / "dear.sqlite", provider_wallet,
                                 price_msat=90_000) as dear:
            async with paying_customer(relay_url, customer, key_delivery=True) as client:  # no cap given
                with pytest.raises(PaymentRefused) as info:
                    await client.ask("too dear", provider=dear.pubkey, timeout=60)
        assert info.value.reason == "above_max" and "--max-msat" in str(info.value)
        assert await customer.balance() == before_c and await provider_wallet.balance() == before_p
        async with paid_provider(relay_url, openai_double.base_url, tmp_path / "ok.sqlite", provider_wallet,
                                 price_msat=2_000) as provider:
            async with paying_customer(relay_url, customer, key_delivery=True) as client:
                outcome = await client.ask("lnbits, pay first", provider=provider.pubkey, timeout=60)
            assert provider.key_sales is None  # and the start said why, in one line
            assert any("LNbitsWallet issues neither invoices for a chosen preimage nor hold invoices" in r.getMessage()
                       for r in caplog.records)
        assert outcome.paid_msat == 2_000 and outcome.delivery == ""  # pay-first: LNbits cannot sell by key
        assert await provider_wallet.balance() - before_p == 2_000
        with Ledger() as ledger:
            assert [r.status for r in ledger.receipts()] == ["paid"]
    finally:
        await customer.aclose()
        await provider_wallet.aclose()
