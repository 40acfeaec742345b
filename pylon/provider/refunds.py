"""The provider's half of a refund (docs/PROTOCOL.md, "Refunds"): owe it, then pay it once.

* `offer(job)` runs when a PAID job fails for good: the job store records `refund_status =
  'offered'` and the amount before the `error` feedback (which carries `["refund", msat]`) goes
  out, so the offer survives a restart.
* `on_request(event)` handles a customer's kind-7051 refund request. It pays only when the
  request is signed by the job's customer, the job failed after being paid, the offer is still
  open, and the invoice (decoded here, not trusted from tags) asks exactly the offered amount
  and is not expired. The offer is claimed with one conditional UPDATE (`'offered' ->
  'paying'`, with the invoice's hash) BEFORE the wallet is asked: two requests (two relays, a
  restarted customer) cannot both pay. A typed wallet refusal (no money moved) reopens the
  offer; an unknown outcome stays 'paying' and `resume()` asks the wallet after a restart.
* Pay-for-the-key jobs (the result is delivered encrypted and paid with a preimage only the
  result unlocks) need no refund: the customer pays exactly when it can read the result.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pylon.jobs.nip90 import JobParseError
from pylon.jobs.refund import RefundRequest
from pylon.nostr.event import Event
from pylon.provider.jobstore import JobStore

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import Wallet

log = logging.getLogger("pylon.provider.refunds")


class RefundDesk:
    """Refund offers and payments for one provider's job store and wallet."""

    def __init__(self, store: JobStore, wallet: Wallet, *, pubkey: str) -> None:
        self.store = store
        self.wallet = wallet
        self.pubkey = pubkey
        self.refunded = 0  # refunds paid by this process (stats)

    def offer(self, job_id: str, amount_msat: int) -> int | None:
        """Record that a paid job's `amount_msat` is owed back; the amount to put on the error, or None."""
        row = self.store.get(job_id)
        if row is None or row.paid_at is None or not amount_msat:
            return None
        if self.store.offer_refund(job_id, amount_msat):
            log.info("job %s: refund of %d msat offered", job_id[:12], amount_msat)
            return amount_msat
        row = self.store.get(job_id)
        return row.refund_msat if row is not None and row.refund_status == "offered" else None

    async def on_request(self, event: Event) -> bool:
        """Pay a valid refund request once; True when this call paid it."""
        from wallet.bolt11_codec import decode_bolt11
        from wallet.errors import WalletError, WalletTimeout, WalletUnreachable

        try:
            req = RefundRequest.from_event(event)
        except JobParseError as exc:
            log.info("refund request %s ignored: %s", event.id[:12], exc)
            return False
        if req.provider != self.pubkey:
            return False
        row = self.store.get(req.job_id)
        if row is None or row.customer != req.customer or row.refund_status != "offered" or not row.refund_msat:
            log.info("refund request for job %s ignored (nothing owed to %s…)", req.job_id[:12], req.customer[:12])
            return False
        try:
            invoice = decode_bolt11(req.bolt11)
        except Exception as exc:
            log.info("refund request for job %s: bad invoice: %s", req.job_id[:12], exc)
            return False
        if invoice.amount_msat != row.refund_msat or invoice.is_expired():
            log.info("refund request for job %s: invoice asks %s msat (owed %d) or expired", req.job_id[:12],
                     invoice.amount_msat, row.refund_msat)
            return False
        if not self.store.claim_refund(req.job_id, req.customer, invoice.payment_hash):
            return False  # another request got there first
        try:
            await self.wallet.pay_invoice(req.bolt11, max_msat=row.refund_msat)
        except (WalletTimeout, WalletUnreachable) as exc:  # outcome unknown: resume() asks the wallet later
            log.warning("job %s: refund outcome unknown (%s); will check again", req.job_id[:12], type(exc).__name__)
            return False
        except WalletError as exc:
            log.warning("job %s: refund not paid: %s", req.job_id[:12], exc)
            self.store.finish_refund(req.job_id, paid=False)
            return False
        self.store.finish_refund(req.job_id, paid=True)
        self.refunded += 1
        log.info("job %s refunded %d msat to %s…", req.job_id[:12], row.refund_msat, req.customer[:12])
        return True

    async def resume(self) -> None:
        """After a restart: settle refunds whose payment outcome was unknown."""
        from wallet.base import InvoiceState

        for row in self.store.refunds_in("paying"):
            if not row.refund_hash:
                continue
            try:
                state = await self.wallet.lookup_payment(row.refund_hash)
            except Exception as exc:
                log.warning("job %s: refund lookup failed: %s", row.request_id[:12], type(exc).__name__)
                continue
            if state == InvoiceState.SETTLED:
                self.store.finish_refund(row.request_id, paid=True)
            elif state in (InvoiceState.FAILED, InvoiceState.EXPIRED):
                self.store.finish_refund(row.request_id, paid=False)


def job_deadline(request_event: Event, paid_at: float | None, *, default_s: float) -> float:
    """When a paid job stops being worth running: its NIP-40 expiration, else `default_s` after payment."""
    exp = request_event.expiration()
    if exp is not None:
        return float(exp)
    return (paid_at or time.time()) + default_s
