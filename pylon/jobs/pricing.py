"""The price of a job: one rule, shared by the provider (quote) and the customer (NIP-89 discovery).

    quote = price_msat + ceil(max_tokens * price_per_1k_tokens_msat / 1000)

where `max_tokens` is the job's `max_tokens` capped at the provider's cap (the cap itself when
the job names none). The prompt is not priced, so the quote is known from the request alone,
before any tokenizer runs, and a customer computes the same number from the announcement.
Wallets that only issue whole-sat invoices (LNbits) get the quote rounded up to the next
1000 msat, so the amount tag always equals the invoice amount.

Pure functions: no I/O; from the rest of Pylon only wallet.base's cached capability check.
"""

from __future__ import annotations

import math
from typing import Protocol, cast, runtime_checkable

from wallet.base import implements


@runtime_checkable
class DeclaresInvoiceUnit(Protocol):
    """A wallet that can only invoice in steps of `invoice_unit_msat` (LNbits: 1000, whole sats)."""

    invoice_unit_msat: int


def quote_msat(max_tokens: int, *, price_msat: int, price_per_1k_tokens_msat: int, unit_msat: int = 1) -> int:
    """The price of one job whose (capped) max_tokens is `max_tokens`, rounded up to `unit_msat`."""
    amount = int(price_msat) + math.ceil(int(max_tokens) * int(price_per_1k_tokens_msat) / 1000)
    if unit_msat > 1 and amount % unit_msat:
        amount += unit_msat - amount % unit_msat
    return amount


def invoice_unit_msat(wallet: object) -> int:
    """The smallest invoice step the wallet can issue: what it declares, else 1 msat."""
    if implements(wallet, DeclaresInvoiceUnit):  # once per class, not per quote
        unit = cast(DeclaresInvoiceUnit, wallet).invoice_unit_msat
        if isinstance(unit, int) and unit > 0:
            return unit
    return 1


def capped_max_tokens(requested: int | None, cap: int | None) -> int:
    """The max_tokens a job is priced (and run) with: `requested` capped at `cap`, the cap when
    the job names none; with no cap, what was requested (0 when neither is known)."""
    cap = cap or 0
    if requested and cap:
        return min(requested, cap)
    return requested or cap
