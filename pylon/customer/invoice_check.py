"""The client's check of a provider's invoice before anything is paid.

A NIP-90 `payment-required` carries `["amount", msat, bolt11]`; the amount tag is only a
suggestion. `check_invoice` decodes the BOLT11 itself and refuses, with a reason code, unless
every rule holds. It has no side effects: the "never paid this hash before" rule lives in
`pylon.customer.ledger.Ledger.record_intent`, which refuses a second intent for a hash or a job.

    decoded = check_invoice(bolt11, amount_tag_msat=tag, bid_msat=bid, max_msat=cap,
                            budget_left_msat=budget.left_msat(), wallet_network=wallet.network)
"""

from __future__ import annotations

import time
from typing import Final

from pylon.customer.defaults import BID_HINT, DAILY_HINT, MAX_MSAT_HINT
from pylon.errors import PaymentRefused
from wallet.bolt11_codec import DecodedInvoice, decode_bolt11
from wallet.errors import InvoiceInvalid

__all__ = ["DecodedInvoice", "PaymentRefused", "check_invoice", "REASONS"]

# Reason codes, one per rule (stable strings: logged, shown in --json, asserted in tests).
MALFORMED: Final = "malformed"            # not a decodable, correctly signed BOLT11 invoice
NO_AMOUNT: Final = "no_amount"            # amountless invoice: the payer would choose the amount
AMOUNT_MISMATCH: Final = "amount_mismatch"  # invoice amount != the feedback's amount tag
ABOVE_BID: Final = "above_bid"            # more than the job's bid
ABOVE_MAX: Final = "above_max"            # more than the per-job cap (--max-msat)
ABOVE_BUDGET: Final = "above_budget"      # more than what is left of the daily/session budget
EXPIRED: Final = "expired"                # expired (or expires within the safety margin)
WRONG_NETWORK: Final = "wrong_network"    # invoice network != wallet network
WRONG_PAYEE: Final = "wrong_payee"        # signed by another node than the one expected
ALREADY_PAID: Final = "already_paid"      # raised by the ledger: hash or job already has a payment
NO_INVOICE: Final = "no_invoice"          # an amount with no bolt11 (nostrdvm expects a zap): cannot pay
NO_WALLET: Final = "no_wallet"            # a price, and the client has no wallet to pay with
REASONS: Final = (MALFORMED, NO_AMOUNT, AMOUNT_MISMATCH, ABOVE_BID, ABOVE_MAX, ABOVE_BUDGET,
                  EXPIRED, WRONG_NETWORK, WRONG_PAYEE, ALREADY_PAID, NO_INVOICE, NO_WALLET)

# What the user can do about a refusal: named in the message so nobody has to guess which
# flag or config key raised (or would raise) the limit (issue 10, money-safe defaults).
HINTS: Final = {ABOVE_MAX: MAX_MSAT_HINT, ABOVE_BUDGET: DAILY_HINT, ABOVE_BID: BID_HINT}
# The one PaymentRefused (pylon.errors; `reason` is one of REASONS) takes its hint from here
# when the raiser gives none: str(refusal) ends with it, the CLI shows it on its own line.
PaymentRefused.hints.update(HINTS)


def check_invoice(bolt11: str, *, amount_tag_msat: int | None, bid_msat: int | None, max_msat: int | None,
                  budget_left_msat: int | None, wallet_network: str, expected_payee_pubkey: str | None = None,
                  now: float | None = None, min_validity_s: int = 5) -> DecodedInvoice:
    """Decode `bolt11` and return it if it is safe to pay; raise PaymentRefused otherwise.

    None for bid_msat / max_msat / budget_left_msat means "no such limit". amount_tag_msat
    None means the feedback carried no amount tag, which is refused (the tag is what the
    provider claims; an invoice must agree with it). An invoice that expires within
    `min_validity_s` seconds is refused as expired: it could expire while in flight.
    """
    try:
        inv = decode_bolt11(bolt11)
    except InvoiceInvalid as exc:
        raise PaymentRefused(MALFORMED, str(exc)) from None
    if inv.network != wallet_network:
        raise PaymentRefused(WRONG_NETWORK, f"invoice is for {inv.network}, the wallet is on {wallet_network}")
    if inv.amount_msat is None:
        raise PaymentRefused(NO_AMOUNT, "invoice has no amount")
    amount = inv.amount_msat
    if amount_tag_msat is None:
        raise PaymentRefused(AMOUNT_MISMATCH, f"feedback has no amount tag; invoice asks {amount} msat")
    if amount != amount_tag_msat:
        raise PaymentRefused(AMOUNT_MISMATCH, f"invoice asks {amount} msat but the amount tag says {amount_tag_msat} msat")
    if bid_msat is not None and amount > bid_msat:
        raise PaymentRefused(ABOVE_BID, f"invoice asks {amount} msat, above the bid of {bid_msat} msat")
    if max_msat is not None and amount > max_msat:
        raise PaymentRefused(ABOVE_MAX, f"invoice asks {amount} msat, above the per-job cap of {max_msat} msat")
    if budget_left_msat is not None and amount > budget_left_msat:
        raise PaymentRefused(ABOVE_BUDGET, f"invoice asks {amount} msat, only {max(budget_left_msat, 0)} msat of the budget is left")
    t = time.time() if now is None else now
    if t + min_validity_s >= inv.expires_at:
        raise PaymentRefused(EXPIRED, f"invoice expired (or expires within {min_validity_s} s) at {inv.expires_at}")
    if expected_payee_pubkey is not None and inv.payee.lower() != expected_payee_pubkey.lower():
        raise PaymentRefused(WRONG_PAYEE, f"invoice is signed by node {inv.payee[:16]}…, expected {expected_payee_pubkey[:16]}…")
    return inv
