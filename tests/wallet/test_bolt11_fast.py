"""The fast 5-bit word conversions in wallet.bolt11_codec equal the bolt11 package's originals."""

from __future__ import annotations

import bolt11.bit_utils as originals
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.bolt11_codec import bits_to_u5, decode_bolt11, encode_bolt11, u5_to_bits

words = st.lists(st.integers(min_value=0, max_value=31), max_size=300)


@settings(max_examples=200, deadline=None)
@given(words)
def test_u5_to_bits_matches_the_package(ws: list[int]) -> None:
    ours, theirs = u5_to_bits(ws), originals.u5_to_bitarray(ws)
    assert ours == theirs and ours.len == theirs.len and type(ours) is type(theirs)


@settings(max_examples=200, deadline=None)
@given(words)
def test_bits_to_u5_matches_the_package(ws: list[int]) -> None:
    bits = originals.u5_to_bitarray(ws)
    assert bits_to_u5(bits) == originals.bitarray_to_u5(bits) == ws


def test_the_package_uses_them_and_invoices_round_trip() -> None:
    import sys

    assert sys.modules["bolt11.decode"].u5_to_bitarray is u5_to_bits
    assert sys.modules["bolt11.encode"].bitarray_to_u5 is bits_to_u5
    text = encode_bolt11(node_secret_hex="11" * 32, network="regtest", amount_msat=1234,
                         payment_hash="ab" * 32, payment_secret="cd" * 32, memo="héllo job", expiry_s=600,
                         created_at=1_700_000_000)
    d = decode_bolt11(text)
    assert (d.amount_msat, d.payment_hash, d.description, d.expiry_s, d.network) == (1234, "ab" * 32, "héllo job",
                                                                                      600, "regtest")
