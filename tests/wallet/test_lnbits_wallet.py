"""LNbitsWallet against a real LNbits 1.6.2 (FakeWallet: pays internal invoices only)."""

from __future__ import annotations

import hashlib
import time

import pytest

from wallet import (
    AlreadyPaid,
    AmountAboveMax,
    InsufficientBalance,
    InvoiceInvalid,
    InvoiceNotFound,
    InvoiceState,
    Unauthorized,
    WalletUnreachable,
    open_wallet,
    redact_uri,
)
from wallet.lnbits import LNbitsWallet

pytestmark = pytest.mark.lnbits


async def test_invoice_pay_lookup_between_two_accounts(lnbits):
    alice, bob = open_wallet(lnbits.uri(lnbits.alice)), open_wallet(lnbits.uri(lnbits.bob))
    assert isinstance(alice, LNbitsWallet) and alice.network == "bitcoin"
    try:
        a0, b0 = await alice.balance(), await bob.balance()
        inv = await bob.make_invoice(21_000, "pylon job", expiry_s=300)
        assert inv.bolt11.startswith("lnbc") and inv.amount_msat == 21_000
        assert await bob.lookup_invoice(inv.payment_hash) == InvoiceState.PENDING
        assert await alice.lookup_payment(inv.payment_hash) == InvoiceState.FAILED  # not paid yet
        pay = await alice.pay_invoice(inv.bolt11, max_msat=21_000)
        assert hashlib.sha256(bytes.fromhex(pay.preimage)).hexdigest() == inv.payment_hash
        assert await bob.lookup_invoice(inv.payment_hash) == InvoiceState.SETTLED
        assert await alice.lookup_payment(inv.payment_hash) == InvoiceState.SETTLED
        assert (await alice.payment_details(inv.payment_hash)).preimage == pay.preimage
        got = await bob.received_details(inv.payment_hash)  # the payee's proof (NIP-47 payment_received)
        assert got is not None and got.preimage == pay.preimage and got.amount_msat == 21_000
        assert abs(got.settled_at - time.time()) < 120  # LNbits' updated_at, an ISO 8601 string
        assert await alice.received_details(inv.payment_hash) is None  # the payer's side: not an incoming invoice
        unpaid = await bob.make_invoice(1_000, "never paid", expiry_s=300)
        assert await bob.received_details(unpaid.payment_hash) is None
        assert await alice.balance() == a0 - 21_000 - pay.fee_msat
        assert await bob.balance() == b0 + 21_000
        with pytest.raises(AlreadyPaid):
            await alice.pay_invoice(inv.bolt11, max_msat=21_000)
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_typed_errors(lnbits):
    bob_admin = open_wallet(lnbits.uri(lnbits.bob))
    alice_read = open_wallet(lnbits.uri(lnbits.alice, key="inkey"))
    bad = open_wallet(lnbits.uri({"adminkey": "0" * 32}))
    try:
        big = await alice_read.make_invoice(10_000_000_000)  # the invoice key may create invoices
        with pytest.raises(InsufficientBalance):
            await bob_admin.pay_invoice(big.bolt11, max_msat=10**13)
        small = await bob_admin.make_invoice(5_000)
        with pytest.raises(AmountAboveMax):
            await alice_read.pay_invoice(small.bolt11, max_msat=4_999)
        with pytest.raises(Unauthorized):        # ... but not pay
            await alice_read.pay_invoice(small.bolt11, max_msat=5_000)
        with pytest.raises(Unauthorized):
            await bad.balance()
        with pytest.raises(InvoiceNotFound):
            await bob_admin.lookup_invoice("ab" * 32)
        with pytest.raises(InvoiceInvalid):
            await bob_admin.make_invoice(1_500)  # LNbits works in whole sats
        assert await bob_admin.lookup_invoice(small.payment_hash) == InvoiceState.PENDING
    finally:
        for w in (bob_admin, alice_read, bad):
            await w.aclose()


async def test_unreachable_and_redaction():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"lnbits://SUPERSECRETKEY@127.0.0.1:{port}?tls=0"
    w = open_wallet(uri)
    try:
        with pytest.raises(WalletUnreachable) as info:
            await w.balance()
        assert "SUPERSECRETKEY" not in str(info.value) and "SUPERSECRETKEY" not in repr(w)
        assert "SUPERSECRETKEY" not in redact_uri(uri)
    finally:
        await w.aclose()
    assert LNbitsWallet.from_uri("lnbits://k@example.com:443/lnbits").base_url == "https://example.com:443/lnbits"
