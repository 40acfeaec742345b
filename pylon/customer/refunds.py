"""The customer's half of a refund (docs/PROTOCOL.md, "Refunds"): invoice, ask, see it arrive.

When the provider we paid reports an `error` offering the money back (`["refund", msat]`), the
client makes an invoice of its own wallet for what the receipt paid, records the invoice's hash
on the receipt (`refund_status = 'requested'`) BEFORE asking, publishes a signed kind-7051
refund request and waits (bounded) for its invoice to settle; then the receipt says
`refunded` and the amount no longer counts against the budgets.

Nothing here can lose money: the worst case is a refund that does not come (the provider is
gone), which leaves the receipt paid and `requested`. `settle_requested` (run when a client
starts) looks those invoices up again, and `request_refund` may be called again for the same
job: the provider pays at most once per job whatever the number of requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from pylon.customer.ledger import Ledger, Receipt
from pylon.errors import RelayError
from pylon.jobs.refund import RefundRequest
from pylon.nostr.keys import Keys

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import Wallet

log = logging.getLogger("pylon.customer.refunds")

REFUND_WAIT_S = 20.0
REFUND_INVOICE_EXPIRY_S = 24 * 3600


async def _invoice_state(wallet: Wallet, payment_hash: str, wait_s: float) -> Any:
    """The refund invoice's state after waiting up to `wait_s` for it to settle."""
    from wallet.base import InvoiceState, SupportsWaitInvoice

    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            if isinstance(wallet, SupportsWaitInvoice) and left > 0:
                state = await wallet.wait_invoice(payment_hash, timeout=left)
            else:
                state = await wallet.lookup_invoice(payment_hash)
        except Exception as exc:  # wallet trouble: the money may still arrive; look again later
            log.info("refund invoice %s: lookup failed: %s", payment_hash[:12], type(exc).__name__)
            state = None
        if state == InvoiceState.SETTLED or left <= 0:
            return state
        await asyncio.sleep(min(delay, max(left, 0.01)))
        delay = min(delay * 2, 1.0)


async def request_refund(ledger: Ledger, wallet: Wallet, keys: Keys, pool: Any, receipt: Receipt, *,
                         wait_s: float = REFUND_WAIT_S) -> Receipt:
    """Ask the provider of `receipt` to pay its amount back; the receipt as it stands afterwards."""
    from wallet.base import InvoiceState

    if receipt.refund_status == "refunded":
        return receipt
    if receipt.refund_status == "requested" and receipt.refund_hash:
        # an earlier request's invoice may have been paid meanwhile: never ask twice for nothing
        if await _invoice_state(wallet, receipt.refund_hash, 0) == InvoiceState.SETTLED:
            return await ledger.mark_refunded_async(receipt.payment_hash) or receipt
    invoice = await wallet.make_invoice(receipt.amount_msat, f"pylon refund for job {receipt.job_id}",
                                        REFUND_INVOICE_EXPIRY_S)
    marked = await ledger.mark_refund_requested_async(receipt.payment_hash, invoice.payment_hash)
    if marked is None:  # not a paid receipt, or refunded meanwhile
        return ledger.get(receipt.payment_hash) or receipt
    event = RefundRequest.build(keys, job_id=receipt.job_id, provider=receipt.provider,
                                amount_msat=receipt.amount_msat, bolt11=invoice.bolt11)
    try:
        await pool.publish(event)
    except RelayError as exc:
        log.warning("refund request for job %s not accepted: %s", receipt.job_id[:12], exc)
        return marked
    log.info("job %s: asked %s… for a refund of %d msat", receipt.job_id[:12], receipt.provider[:12],
             receipt.amount_msat)
    if await _invoice_state(wallet, invoice.payment_hash, wait_s) == InvoiceState.SETTLED:
        done = await ledger.mark_refunded_async(receipt.payment_hash)
        log.info("job %s: refunded %d msat", receipt.job_id[:12], receipt.amount_msat)
        return done or marked
    return marked


async def settle_requested(ledger: Ledger, wallet: Wallet) -> list[Receipt]:
    """After a restart: receipts whose refund invoice settled while we were away become refunded."""
    from wallet.base import InvoiceState

    done: list[Receipt] = []
    for r in ledger.refunds_requested():
        if r.refund_hash and await _invoice_state(wallet, r.refund_hash, 0) == InvoiceState.SETTLED:
            out = await ledger.mark_refunded_async(r.payment_hash)
            if out is not None:
                done.append(out)
    return done
