"""Interop: rust-nostr's NWC client (nostr-sdk 0.45.1 `NostrWalletConnect`) against our NwcService,
over our embedded relay, paying a dev-wallet invoice."""

from __future__ import annotations

import hashlib

import pytest

from wallet import InvoiceState
from wallet.nwc_service import NwcService

nostr_sdk = pytest.importorskip("nostr_sdk")
pytestmark = pytest.mark.embedded_relay


async def test_nostr_sdk_client_pays_through_our_service(relay_url, dev_ledger):
    dev_ledger.fund("svc", 50_000)
    shop = dev_ledger.wallet("shop")
    service = NwcService(dev_ledger.wallet("svc"), [relay_url], budget_msat=40_000)
    conn = service.new_connection(name="nostr-sdk")
    async with service.running():
        nwc = nostr_sdk.NostrWalletConnect(nostr_sdk.NostrWalletConnectUri.parse(service.uri_for(conn)))
        try:
            assert (await nwc.get_balance()).balance == 50_000
            info = await nwc.get_info()
            assert info.network == "regtest"
            inv = await shop.make_invoice(21_000, "interop")
            paid = await nwc.pay_invoice(nostr_sdk.PayInvoiceRequest(id=None, invoice=inv.bolt11, amount=None))
            assert hashlib.sha256(bytes.fromhex(paid.preimage)).hexdigest() == inv.payment_hash
            assert await shop.lookup_invoice(inv.payment_hash) == InvoiceState.SETTLED
            assert (await nwc.get_balance()).balance == 29_000
            made = await nwc.make_invoice(nostr_sdk.MakeInvoiceRequest(amount=3_000, description="tip",
                                                                      description_hash=None, expiry=300))
            assert made.invoice.startswith("lnbcrt")
            looked = await nwc.lookup_invoice(nostr_sdk.LookupInvoiceRequest(payment_hash=made.payment_hash, invoice=None))
            assert looked.amount == 3_000 and looked.state == nostr_sdk.TransactionState.PENDING
            over = await shop.make_invoice(20_000)   # 21 + 20 > 40 sat budget
            with pytest.raises(Exception) as info:
                await nwc.pay_invoice(nostr_sdk.PayInvoiceRequest(id=None, invoice=over.bolt11, amount=None))
            assert "QuotaExceeded" in str(info.value)   # rust-nostr's name for our QUOTA_EXCEEDED
            assert await shop.lookup_invoice(over.payment_hash) == InvoiceState.PENDING
        finally:
            del nwc
    assert service.stats["requests"] >= 6
    # nostr-sdk read our info event (encryption "nip44_v2 nip04") and spoke NIP-44 v2 only
    assert set(service.stats["by_scheme"]) == {"nip44_v2"}
