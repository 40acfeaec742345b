"""The dev wallet against real SQLite files and real BOLT11 encoding/decoding."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import bolt11
import pytest

from wallet import (
    AlreadyPaid,
    AmountAboveMax,
    InsufficientBalance,
    InvoiceExpired,
    InvoiceInvalid,
    InvoiceNotFound,
    InvoiceState,
    PaymentFailed,
    WalletError,
    open_wallet,
    redact_uri,
)
from wallet.dev import DevWallet, parse_dev_uri

REPO = Path(__file__).resolve().parents[2]


async def test_invoice_decodes_with_bolt11_and_carries_amount_hash_payee(dev_ledger):
    bob = dev_ledger.wallet("bob")
    inv = await bob.make_invoice(21_337, "a memo", expiry_s=120)
    assert inv.bolt11.startswith("lnbcrt")
    d = bolt11.decode(inv.bolt11)
    assert d.currency == "bcrt"
    assert int(d.amount_msat) == 21_337 == inv.amount_msat
    assert d.payment_hash == inv.payment_hash
    assert d.payee == bob.node_pubkey
    assert d.description == "a memo"
    assert d.date + d.expiry == inv.expires_at
    assert await bob.lookup_invoice(inv.payment_hash) == InvoiceState.PENDING


async def test_pay_moves_money_and_reveals_the_preimage(dev_ledger):
    dev_ledger.fund("alice", 50_000)
    alice, bob = dev_ledger.wallet("alice"), dev_ledger.wallet("bob")
    inv = await bob.make_invoice(12_000)
    assert await bob.received_details(inv.payment_hash) is None  # not paid yet
    pay = await alice.pay_invoice(inv.bolt11, max_msat=12_000)
    got = await bob.received_details(inv.payment_hash)  # the payee's proof (NIP-47 payment_received)
    assert got is not None and (got.preimage, got.amount_msat) == (pay.preimage, 12_000) and got.preimage_matches()
    assert await alice.received_details(inv.payment_hash) is None  # not alice's invoice
    assert hashlib.sha256(bytes.fromhex(pay.preimage)).hexdigest() == inv.payment_hash
    assert (pay.fee_msat, pay.amount_msat) == (0, 12_000)
    assert await alice.balance() == 38_000
    assert await bob.balance() == 12_000
    assert await bob.lookup_invoice(inv.payment_hash) == InvoiceState.SETTLED
    assert await alice.lookup_payment(inv.payment_hash) == InvoiceState.SETTLED
    assert await bob.lookup_payment(inv.payment_hash) == InvoiceState.FAILED  # bob did not pay it
    assert (await alice.payment_details(inv.payment_hash)).preimage == pay.preimage
    with pytest.raises(AlreadyPaid):
        await alice.pay_invoice(inv.bolt11, max_msat=12_000)
    assert await alice.balance() == 38_000


async def test_refusals_move_nothing(dev_ledger):
    dev_ledger.fund("alice", 5_000)
    alice, bob = dev_ledger.wallet("alice"), dev_ledger.wallet("bob")
    inv = await bob.make_invoice(6_000)
    with pytest.raises(AmountAboveMax):
        await alice.pay_invoice(inv.bolt11, max_msat=5_999)
    with pytest.raises(InsufficientBalance):
        await alice.pay_invoice(inv.bolt11, max_msat=6_000)
    own = await alice.make_invoice(1_000)
    with pytest.raises(PaymentFailed):
        await alice.pay_invoice(own.bolt11, max_msat=1_000)
    with pytest.raises(InvoiceInvalid):
        await alice.pay_invoice("lnbcrt1notaninvoice", max_msat=1_000)
    assert await alice.balance() == 5_000 and await bob.balance() == 0


async def test_expired_invoice_is_refused(dev_ledger):
    dev_ledger.fund("alice", 5_000)
    bob = dev_ledger.wallet("bob")
    inv = await bob.make_invoice(1_000, expiry_s=1)
    with pytest.raises(InvoiceExpired):
        bob.ledger.pay_invoice("alice", inv.bolt11, 1_000, now=time.time() + 2)
    assert bob.ledger.lookup_invoice("bob", inv.payment_hash, now=time.time() + 2) == InvoiceState.EXPIRED
    assert bob.ledger.balance("alice") == 5_000


async def test_invoice_from_another_ledger_is_not_payable(dev_ledger, tmp_path):
    dev_ledger.fund("alice", 5_000)
    other = DevWallet(tmp_path / "other.sqlite", "carol")
    try:
        inv = await other.make_invoice(1_000)
        assert other.node_pubkey != dev_ledger.wallet("x").node_pubkey
        with pytest.raises(PaymentFailed, match="same dev ledger"):
            await dev_ledger.wallet("alice").pay_invoice(inv.bolt11, max_msat=1_000)
    finally:
        await other.aclose()


async def test_lookup_unknown_and_bad_input(dev_ledger):
    bob = dev_ledger.wallet("bob")
    with pytest.raises(InvoiceNotFound):
        await bob.lookup_invoice("00" * 32)
    with pytest.raises(InvoiceInvalid):
        await bob.lookup_invoice("zz")
    for bad in (0, -5, 1.5, True):
        with pytest.raises(InvoiceInvalid):
            await bob.make_invoice(bad)
    with pytest.raises(InvoiceInvalid):
        await bob.make_invoice(1000, expiry_s=0)
    with pytest.raises(WalletError):
        await bob.fund(-1)


def test_uri_parsing_and_open_wallet(dev_ledger):
    path, acct = parse_dev_uri(dev_ledger.uri("alice"))
    assert (path, acct) == (dev_ledger.path, "alice")
    w = open_wallet(dev_ledger.uri("alice"))
    assert isinstance(w, DevWallet) and w.network == "regtest"
    asyncio.run(w.aclose())
    with pytest.raises(WalletError):
        open_wallet("dev:///tmp/x.sqlite?account=bad name!")
    with pytest.raises(WalletError, match="unknown wallet URI scheme"):
        open_wallet("ftp://secret@host")
    with pytest.raises(WalletError, match="no wallet configured"):
        open_wallet("")


def test_redact_uri_hides_secrets():
    assert redact_uri("lnbits://ADMINKEY123@127.0.0.1:5000?tls=0") == "lnbits://***@127.0.0.1:5000?tls=0"
    red = redact_uri("nostr+walletconnect://ab12?relay=wss://r.example&secret=deadbeef")
    assert "deadbeef" not in red and "relay=wss://r.example" in red
    assert redact_uri("dev:///tmp/l.sqlite?account=a") == "dev:///tmp/l.sqlite?account=a"
    try:
        open_wallet("weird://TOPSECRET@h")
    except WalletError as exc:
        assert "TOPSECRET" not in str(exc)


_PAYER = r"""
import asyncio, json, sys
from wallet.dev import DevWallet
async def main(path, bolts):
    w = DevWallet(path, "alice")
    ok = 0
    for b in bolts:
        try:
            await w.pay_invoice(b, max_msat=10**9)
            ok += 1
        except Exception as exc:
            pass
    print(ok)
asyncio.run(main(sys.argv[1], json.loads(sys.stdin.read())))
"""


async def test_two_processes_paying_from_one_ledger_never_double_spend(dev_ledger):
    """Two processes race to pay the same 30 invoices from one account funded for only 20."""
    import json

    dev_ledger.fund("alice", 20 * 1_000)
    bob = dev_ledger.wallet("bob")
    invoices = [(await bob.make_invoice(1_000)).bolt11 for _ in range(30)]
    procs = [subprocess.Popen([sys.executable, "-c", _PAYER, str(dev_ledger.path)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(json.dumps(invoices if i == 0 else invoices[::-1]), timeout=120)[0] for i, p in enumerate(procs)]
    assert all(p.returncode == 0 for p in procs)
    paid = sum(int(o.strip()) for o in outs)
    assert paid == 20  # each success paid a distinct invoice; the balance ran out exactly
    assert bob.ledger.balance("alice") == 0
    assert bob.ledger.balance("bob") == 20_000
    settled = [await bob.lookup_invoice(bolt11.decode(b).payment_hash) for b in invoices]
    assert settled.count(InvoiceState.SETTLED) == 20


async def test_strings_this_ledger_did_not_issue_get_precise_refusals(dev_ledger):
    """Issued invoices are found by their text (no decode); anything else is decoded to say why
    it cannot be paid, and nothing moves."""
    import secrets as _secrets

    from wallet.bolt11_codec import encode_bolt11

    dev_ledger.fund("alice", 50_000)
    alice, bob = dev_ledger.wallet("alice"), dev_ledger.wallet("bob")
    inv = await bob.make_invoice(1_000, "issued here", expiry_s=60)

    def forged(**over):
        fields = dict(node_secret_hex=_secrets.token_bytes(32).hex(), network="regtest", amount_msat=1_000,
                      payment_hash=_secrets.token_bytes(32).hex(), payment_secret=_secrets.token_bytes(32).hex(),
                      memo="not from this ledger", expiry_s=60)
        fields.update(over)
        return encode_bolt11(**fields)

    with pytest.raises(InvoiceInvalid):
        await alice.pay_invoice("lnbcrt1garbage", max_msat=1_000)
    with pytest.raises(PaymentFailed, match="regtest invoices only"):
        await alice.pay_invoice(forged(network="bitcoin"), max_msat=1_000)
    with pytest.raises(InvoiceInvalid, match="amountless"):
        await alice.pay_invoice(forged(amount_msat=None), max_msat=1_000)
    with pytest.raises(AmountAboveMax):
        await alice.pay_invoice(forged(amount_msat=5_000), max_msat=1_000)
    with pytest.raises(PaymentFailed, match="does not match"):  # our payment hash, someone else's string
        await alice.pay_invoice(forged(payment_hash=inv.payment_hash), max_msat=1_000)
    with pytest.raises(AmountAboveMax):  # an issued invoice above the cap, from its stored row
        await alice.pay_invoice(inv.bolt11, max_msat=999)
    assert await alice.balance() == 50_000 and await bob.balance() == 0
    paid = await alice.pay_invoice("  LIGHTNING:" + inv.bolt11.upper(), max_msat=1_000)
    assert paid.payment_hash == inv.payment_hash and await bob.balance() == 1_000
