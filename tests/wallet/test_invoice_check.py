"""check_invoice: one test per refusal rule, on real signed BOLT11 invoices."""

from __future__ import annotations

import os
import time

import pytest

from pylon.customer.invoice_check import REASONS, PaymentRefused, check_invoice
from wallet.bolt11_codec import encode_bolt11

NODE = os.urandom(32).hex()


def make(amount_msat=10_000, network="regtest", expiry_s=600, created_at=None, node=NODE):
    return encode_bolt11(node_secret_hex=node, network=network, amount_msat=amount_msat,
                         payment_hash=os.urandom(32).hex(), payment_secret=os.urandom(32).hex(),
                         memo="job", expiry_s=expiry_s, created_at=created_at)


def ok_kwargs(**over):
    base = dict(amount_tag_msat=10_000, bid_msat=10_000, max_msat=20_000, budget_left_msat=50_000,
                wallet_network="regtest")
    base.update(over)
    return base


def refused(bolt, **over) -> str:
    with pytest.raises(PaymentRefused) as info:
        check_invoice(bolt, **ok_kwargs(**over))
    assert info.value.reason in REASONS
    return info.value.reason


def test_accepts_a_good_invoice():
    bolt = make()
    inv = check_invoice(bolt, **ok_kwargs())
    assert inv.amount_msat == 10_000 and inv.network == "regtest" and len(inv.payment_hash) == 64
    assert check_invoice(bolt, **ok_kwargs(bid_msat=None, max_msat=None, budget_left_msat=None)).bolt11 == bolt


def test_amount_must_equal_the_amount_tag():
    assert refused(make(), amount_tag_msat=9_999) == "amount_mismatch"
    assert refused(make(), amount_tag_msat=None) == "amount_mismatch"


def test_amount_above_bid():
    assert refused(make(10_001), amount_tag_msat=10_001) == "above_bid"


def test_amount_above_per_job_cap():
    assert refused(make(), bid_msat=None, max_msat=9_000) == "above_max"


def test_amount_above_budget_left():
    assert refused(make(), budget_left_msat=9_999) == "above_budget"
    assert refused(make(), budget_left_msat=0) == "above_budget"


def test_expired_or_about_to_expire():
    assert refused(make(expiry_s=60, created_at=int(time.time()) - 120)) == "expired"
    assert refused(make(expiry_s=3)) == "expired"  # within the 5 s safety margin
    bolt = make(expiry_s=600)
    assert refused(bolt, now=time.time() + 601) == "expired"


def test_wrong_network():
    assert refused(make(network="bitcoin")) == "wrong_network"
    assert refused(make(), wallet_network="signet") == "wrong_network"


def test_wrong_payee():
    bolt = make()
    from coincurve import PrivateKey

    other = PrivateKey().public_key.format().hex()
    assert refused(bolt, expected_payee_pubkey=other) == "wrong_payee"
    mine = PrivateKey(bytes.fromhex(NODE)).public_key.format().hex()
    assert check_invoice(bolt, **ok_kwargs(expected_payee_pubkey=mine)).payee == mine


@pytest.mark.parametrize("junk", ["", "lnbc", "lnbcrt1xyz", "hello world", "lnbcrt10n1" + "q" * 200, "x" * 8000])
def test_malformed(junk):
    assert refused(junk) == "malformed"


def test_tampered_invoice_is_malformed():
    bolt = make()
    flipped = bolt[:20] + ("q" if bolt[20] != "q" else "p") + bolt[21:]
    assert refused(flipped) == "malformed"


def test_amountless_invoice():
    assert refused(make(amount_msat=0)) == "no_amount"
