"""The provider's payment step: invoice, wait for settlement, record — crash-safe.

The price itself is pylon.jobs.pricing (the quote rule the customer also uses). A bid below
the quote gets `error` feedback (not `payment-required`: there is nothing the customer could
pay that it agreed to) whose status extra says the price, with `["amount", <quote msat>]`
(no bolt11) so software can read it; the Provider sends that before this step.

One paid job, each state committed to the JobStore *before* the step it enables:

    quoted --(invoice made)--> awaiting_payment [invoice, payment_hash, invoice_expires_at]
           --(payment-required published, wallet polled)--> paid [paid_at] -> processing -> done
                                                         \\-> error "invoice expired"

Waiting is `wallet.waiting.wait_for_invoice`: `wallet.wait_invoice(payment_hash, timeout)` where
the wallet has it (the dev wallet: one watcher for all of a provider's invoices, woken by the
payment itself; NWC: the wallet's `payment_received` notification), else `lookup_invoice`
polls with a growing interval (10 ms, x1.5, up to 1 s) until the invoice settles or expires;
every job waits in its own task, so thousands of unpaid jobs
wait at once without holding a backend slot. A wallet error while polling is logged and
retried (the money may still arrive). After a restart `collect` picks up `awaiting_payment`
jobs (settled while we were down -> served; expired -> closed with "invoice expired";
pending -> wait again) and `paid` ones are served.

A component, not a mixin: it sees only what it is handed (`PaymentSeams`) — the job store,
the wallet, a feedback publisher, a failure callback and a progress callback — and knows
nothing of the Provider that owns it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Protocol

from pylon.jobs.nip90 import FeedbackStatus, JobRequest
from pylon.provider.delivery import until_accepted
from pylon.provider.job import Job
from pylon.provider.jobstore import JobRow, JobStore
from wallet.base import InvoiceState, Wallet
from wallet.waiting import POLL_FIRST_S, POLL_MAX_S, wait_for_invoice

log = logging.getLogger("pylon.provider.payments")

INVOICE_EXPIRY_S = 600
EXPIRED_REASON = "invoice expired"


class FeedbackPublisher(Protocol):
    """Builds, signs and publishes kind-7000 feedback for `request`; raises RelayError when no
    relay accepted it."""

    def __call__(self, request: JobRequest, status: FeedbackStatus, /, **fields: Any) -> Awaitable[None]: ...


class FailJob(Protocol):
    """Ends the job with `error` (recorded, counted, logged, feedback to the customer)."""

    def __call__(self, job: Job, reason: str) -> None: ...


class ReportProgress(Protocol):
    """Logs and counts a payment state change: "payment-required", "paid" (money earned:
    `job.amount_msat`) or "expired" (already failed through FailJob: count it only)."""

    def __call__(self, job: Job, status: str, detail: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class PaymentSeams:
    """Everything the payment step may touch, handed in by its owner."""

    store: JobStore
    wallet: Wallet | None  # None: a priced job is refused ("no wallet to invoice with")
    publish_feedback: FeedbackPublisher
    fail: FailJob
    progress: ReportProgress


class PaymentCollector:
    """Invoices a provider's priced jobs and waits for them to be paid (one per running Provider)."""

    def __init__(self, seams: PaymentSeams, *, invoice_expiry_s: int = INVOICE_EXPIRY_S,
                 poll_first_s: float = POLL_FIRST_S, poll_max_s: float = POLL_MAX_S) -> None:
        self.store = seams.store
        self.wallet = seams.wallet
        self._publish_feedback = seams.publish_feedback
        self._fail = seams.fail
        self._progress = seams.progress
        self.invoice_expiry_s = int(invoice_expiry_s)
        self.poll_first_s = poll_first_s
        self.poll_max_s = poll_max_s

    # ------------------------------------------------------------------ the step
    async def collect(self, job: Job, status: str | None = None) -> bool:
        """Run the payment step for `job` from wherever the store says it is; True when it may run.

        `status` "quoted": the caller has just quoted the job, so the store is not read again
        (the `awaiting_payment` transition still checks it)."""
        store = self.store
        if status != "quoted":
            row = store.get(job.id)
            if row is None:
                return False
            if row.status == "paid":
                self._restore(job, row)
                return True
            if row.status == "awaiting_payment":
                self._restore(job, row)
                if not row.payment_hash or not row.invoice_expires_at:
                    self._fail(job, "payment state lost (no invoice recorded)")
                    return False
                # resumed after a restart: the quote may never have reached a relay; send it again
                return await self._wait_resending(job, row.payment_hash, int(row.invoice_expires_at))
            if row.status != "quoted":
                return False
        if job.amount_msat == 0:
            return True
        if self.wallet is None:
            self._fail(job, "this provider charges for jobs but has no wallet to invoice with")
            return False
        memo = f"pylon job {job.id} ({job.model}, up to {job.max_tokens} tokens)"
        try:
            invoice = await self.wallet.make_invoice(job.amount_msat, memo, self.invoice_expiry_s)
        except Exception as exc:  # any wallet trouble: the customer hears of it, nothing is owed
            log.warning("job %s: could not make an invoice: %s", job.id[:12], type(exc).__name__)
            self._fail(job, f"provider could not create an invoice: {type(exc).__name__}")
            return False
        if invoice.amount_msat != job.amount_msat:
            self._fail(job, f"wallet issued {invoice.amount_msat} msat instead of {job.amount_msat} msat")
            return False
        job.bolt11 = invoice.bolt11
        if not store.transition(job.id, "awaiting_payment", invoice=invoice.bolt11, payment_hash=invoice.payment_hash,
                                invoice_expires_at=int(invoice.expires_at), amount_msat=job.amount_msat):
            return False  # cancelled meanwhile
        self._progress(job, "payment-required", f"invoice {invoice.payment_hash[:12]}")
        return await self._wait_resending(job, invoice.payment_hash, int(invoice.expires_at))

    async def _wait_resending(self, job: Job, payment_hash: str, expires_at: int) -> bool:
        """Wait for the payment while `payment-required` is (re)sent until a relay accepts it."""
        sender = asyncio.create_task(self._publish_payment_required(job, expires_at))
        try:
            return await self._wait(job, payment_hash, expires_at)
        finally:
            sender.cancel()

    async def _publish_payment_required(self, job: Job, expires_at: float) -> None:
        """Delivery until acknowledged: a quote sent while the relays are down is sent again
        with backoff (0.5 s doubling to 30 s) until a relay accepts it or the invoice expires;
        the job waits for its payment meanwhile."""
        await until_accepted(
            lambda: self._publish_feedback(job.request, "payment-required",
                                           extra=f"pay {job.amount_msat} msat to run this job",
                                           amount_msat=job.amount_msat, bolt11=job.bolt11),
            f"job {job.id[:12]}: payment-required", give_up_at=expires_at)

    async def _wait(self, job: Job, payment_hash: str, expires_at: int) -> bool:
        """Wait until the invoice settles (record `paid`, True) or expires (close, False)."""
        if self.wallet is None:  # restarted without a wallet: nothing here can see the payment
            self._fail(job, "this provider has no wallet to check the payment with")
            return False
        state = await wait_for_invoice(self.wallet, payment_hash, expires_at, label=f"job {job.id[:12]}",
                                       poll_first_s=self.poll_first_s, poll_max_s=self.poll_max_s)
        if state == InvoiceState.SETTLED:
            return self._settled(job)
        self._expired(job, state)
        return False

    def _settled(self, job: Job) -> bool:
        paid_at = time.time()
        if not self.store.transition(job.id, "paid", paid_at=paid_at):
            return self.store.status(job.id) == "paid"
        job.paid_at = paid_at
        self._progress(job, "paid")
        return True

    def _expired(self, job: Job, state: InvoiceState | None) -> None:
        reason = EXPIRED_REASON if state is None or state.value == "expired" else f"invoice {state.value}"
        self._fail(job, reason)
        self._progress(job, "expired")

    @staticmethod
    def _restore(job: Job, row: JobRow) -> None:
        """A resumed job keeps the amount and invoice it was quoted, whatever the price is now."""
        if row.amount_msat is not None:
            job.amount_msat = int(row.amount_msat)
        job.bolt11 = row.invoice
