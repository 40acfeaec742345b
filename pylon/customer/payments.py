"""The customer's payment step: check a provider's invoice, pay it exactly once, keep the receipt.

`ClientPayments` is what `PylonClient` calls on `payment-required` feedback. The rules, each
a refusal with a reason code and nothing paid (see pylon.customer.invoice_check):

* the bolt11 decodes, is signed, has an amount equal to the feedback's `amount` tag, is
  <= the job's bid, <= the per-job cap (`max_msat`), <= what is left of the daily and
  session budgets, is not expired and is on the wallet's network (`check_invoice`);
* its payment hash was never paid (or started to be paid) before, and this job has no
  payment yet (the receipts Ledger's unique indexes, checked in the same SQLite write
  transaction that records the intent: `Budget.pay`).

Who is paid. A BOLT11 invoice names a Lightning node key, and nothing ties a node key to a
Nostr key in general (the provider's wallet may be custodial, NWC, LNbits...), so the payee
node is not checked. What is checked: the `payment-required` event is signed by the
provider's Nostr key (the pool verifies every signature), names our job (`e`) and us (`p`);
when the job targets a provider, only that provider's feedback is considered; and once we
paid provider P, only P's result is accepted as the answer (others are recorded, never
returned). A provider that was paid and never delivers makes the ask fail with
`PaidNoResult` (receipt kept: `pylon receipts`).

Exactly one payment per job: the first acceptable quote is paid; later quotes for the same
job (another provider, or the same one repeating `payment-required`) are ignored and listed
in `AskOutcome.quotes`. The intent is written before the wallet is asked, so a crash between
paying and recording leaves a 'pending' receipt that `Ledger.recover(wallet)` (run when a
client starts) settles by asking the wallet; the job id and payment hash stay blocked meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pylon.customer.budget import Budget
from pylon.errors import JobError
from pylon.customer.invoice_check import NO_INVOICE, PaymentRefused, check_invoice
from pylon.customer.ledger import Ledger, Receipt
from pylon.customer.refunds import settle_requested
from wallet.base import SupportsConnect, Wallet

log = logging.getLogger("pylon.customer.payments")

__all__ = ["ClientPayments", "PaidNoResult", "PaymentRefused", "Quote", "JobPayment"]


class PaidNoResult(JobError):
    """We paid a provider for a job and it never delivered a result. The receipt is kept."""

    def __init__(self, message: str, receipt: Receipt | None = None) -> None:
        super().__init__(message)
        self.receipt = receipt


@dataclass(slots=True)
class Quote:
    """One `payment-required` a job received, and what we did with it."""

    provider: str
    amount_msat: int | None
    payment_hash: str | None = None
    action: str = "ignored"  # "paid" | "refused" | "ignored" (another quote was paid) | "repeat"
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "amount_msat": self.amount_msat, "payment_hash": self.payment_hash,
                "action": self.action, "reason": self.reason}


@dataclass(slots=True)
class JobPayment:
    """The payment state of one ask (kept on the client's job state)."""

    provider: str | None = None  # whom we paid (None: nobody yet)
    receipt: Receipt | None = None
    quotes: list[Quote] = field(default_factory=list)

    @property
    def paid(self) -> bool:
        return self.provider is not None


class ClientPayments:
    """Invoice checks, budgets and receipts for one PylonClient session (one Budget session)."""

    def __init__(self, wallet: Wallet, *, max_msat: int | None = None, budget_msat: int | None = None,
                 daily_budget_msat: int | None = None, ledger: Ledger | None = None,
                 session_id: str | None = None, budget: Budget | None = None) -> None:
        self.wallet = wallet
        if budget is not None:  # shared by several clients (the DSPy bridge: one per event loop)
            self.ledger, self._own_ledger, self.budget = budget.ledger, False, budget
            return
        self.ledger = ledger if ledger is not None else Ledger()
        self._own_ledger = ledger is None
        self.budget = Budget(self.ledger, per_job_msat=max_msat, daily_msat=daily_budget_msat,
                             session_msat=budget_msat, session_id=session_id)

    async def start(self) -> list[Receipt]:
        """Connect the wallet (NWC reads its network here) and settle receipts a crash left pending."""
        if isinstance(self.wallet, SupportsConnect):
            await self.wallet.connect()
        recovered = await self.ledger.recover(self.wallet)
        recovered += await settle_requested(self.ledger, self.wallet)  # refunds that arrived while we were away
        for r in recovered:
            log.info("receipt %d for job %s recovered as %s%s", r.id, r.job_id[:12], r.status,
                     " (refunded)" if r.refund_status == "refunded" else "")
        return recovered

    def close(self) -> None:
        if self._own_ledger:
            self.ledger.close()

    def spent_session_msat(self) -> int:
        return self.budget.spent_session_msat()

    async def on_payment_required(self, payment: JobPayment, *, job_id: str, provider: str,
                                  amount_msat: int | None, bolt11: str | None, bid_msat: int | None) -> Receipt | None:
        """Pay this quote if it is the job's first acceptable one; None when it was ignored.

        Raises PaymentRefused (nothing paid) when a rule fails, or a WalletError from the wallet."""
        quote = Quote(provider=provider, amount_msat=amount_msat)
        payment.quotes.append(quote)
        if payment.paid:
            quote.action = "repeat" if provider == payment.provider else "ignored"
            quote.reason = ("this provider was already paid for the job" if quote.action == "repeat"
                            else f"provider {(payment.provider or '')[:12]}… was already paid for this job")
            log.info("job %s: %s quote from %s ignored (%s)", job_id[:12], amount_msat, provider[:12], quote.reason)
            return None
        try:
            if not bolt11:
                raise PaymentRefused(NO_INVOICE, f"payment-required for {amount_msat} msat carries no bolt11 "
                                     "invoice: cannot pay this provider")
            decoded = check_invoice(bolt11, amount_tag_msat=amount_msat, bid_msat=bid_msat,
                                    max_msat=self.budget.per_job_msat, budget_left_msat=self.budget.left_msat(),
                                    wallet_network=self.wallet.network)
            quote.payment_hash = decoded.payment_hash
            receipt = await self.budget.pay(self.wallet, decoded, job_id=job_id, provider=provider)
        except PaymentRefused as exc:
            quote.action, quote.reason = "refused", exc.reason
            raise
        except Exception as exc:
            quote.action, quote.reason = "refused", type(exc).__name__
            raise
        quote.action = "paid"
        payment.provider, payment.receipt = provider, receipt
        log.info("job %s: paid %d msat (+%d fee) to %s", job_id[:12], receipt.amount_msat, receipt.fee_msat,
                 provider[:12])
        return receipt
