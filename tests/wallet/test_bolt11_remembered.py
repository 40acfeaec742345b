"""decode_bolt11 remembers recent valid strings (issue 15, paid path): the same answer, an
invalid string is refused every time, and a tampered copy of a remembered one is not taken
for it. Real invoices signed by a real dev ledger."""

from __future__ import annotations

import pytest

from wallet.bolt11_codec import _decode, decode_bolt11
from wallet.errors import InvoiceInvalid


def test_remembered_answers_are_the_decoder_s_and_invalid_stays_invalid(dev_ledger):
    inv = dev_ledger.wallet("shop").ledger.make_invoice("shop", 1_000, "memo", 600)
    first, again = decode_bolt11(inv.bolt11), decode_bolt11(inv.bolt11)
    assert first == _decode(inv.bolt11) and again is first
    tampered = inv.bolt11[:-7] + ("q" if inv.bolt11[-7] != "q" else "p") + inv.bolt11[-6:]
    for _ in range(2):
        with pytest.raises(InvoiceInvalid):
            decode_bolt11(tampered)
    assert decode_bolt11("LIGHTNING:" + inv.bolt11.upper()).payment_hash == first.payment_hash
