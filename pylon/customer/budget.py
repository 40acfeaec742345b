"""Spending limits for a client: per job, per UTC day, per session — enforced on the ledger.

`Budget.reserve` checks the limits and writes the payment intent in ONE SQLite write
transaction (BEGIN IMMEDIATE), so two concurrent jobs — in the same process or in two
processes sharing PYLON_HOME — can never both pass the check and overspend together.
`Budget.pay` is the whole exactly-once payment step the client flow needs (its ledger writes
run on the ledger's writer thread, so the event loop never waits for an fsync):

    budget = Budget(Ledger(), per_job_msat=cap, daily_msat=day, session_msat=sess)
    decoded = check_invoice(bolt11, ..., budget_left_msat=budget.left_msat(), ...)
    receipt = await budget.pay(wallet, decoded, job_id=job.id, provider=provider_hex)

A session is one Budget object: it gets a random `session_id` unless given one. Several
PylonClients (one per event loop, e.g. the DSPy bridge's) may share one Budget.

Holds: with a session budget, `hold()` reserves the most a job may cost (its bid) BEFORE the
job is published, so concurrent jobs can never bid more than the session has left between
them; paying consumes the job's hold (the ledger intent takes its place) and `release()`
returns whatever was not paid. A job that would find the room taken by other jobs' holds
waits for them to settle instead of bidding less.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass

from pylon.customer.defaults import SESSION_HINT
from pylon.customer.invoice_check import ABOVE_BUDGET, ABOVE_MAX, NO_AMOUNT, DecodedInvoice, PaymentRefused
from pylon.customer.ledger import Ledger, Receipt, SpendLimits, utc_day_start
from wallet.base import Wallet
from wallet.errors import AlreadyPaid, WalletError, WalletTimeout, WalletUnreachable

log = logging.getLogger(__name__)


def _resolve(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _limit(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (msat) or None")
    return value


@dataclass(eq=False, slots=True)
class Hold:
    """Msats set aside for one job before it is published (its bid); see `Budget.hold`."""

    msat: int
    job_id: str | None = None  # bound once the request event (and so its id) exists
    active: bool = True


class Budget:
    """Per-job cap plus daily and session budgets over a receipts `Ledger` (None = unlimited)."""

    def __init__(self, ledger: Ledger | None = None, *, per_job_msat: int | None = None,
                 daily_msat: int | None = None, session_msat: int | None = None,
                 session_id: str | None = None) -> None:
        self.ledger = ledger if ledger is not None else Ledger()
        self.per_job_msat = _limit(per_job_msat, "per_job_msat")
        self.daily_msat = _limit(daily_msat, "daily_msat")
        self.session_msat = _limit(session_msat, "session_msat")
        self.session_id = session_id or uuid.uuid4().hex
        self._hold_lock = threading.Lock()  # holds are taken from several threads and event loops
        self._holds: list[Hold] = []
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def __repr__(self) -> str:
        return (f"Budget(per_job_msat={self.per_job_msat}, daily_msat={self.daily_msat}, "
                f"session_msat={self.session_msat}, session_id={self.session_id[:8]}…)")

    # -- reading -----------------------------------------------------------------------------
    def spent_today_msat(self, now: float | None = None) -> int:
        return self.ledger.spent_msat(since=utc_day_start(now))

    def spent_session_msat(self) -> int:
        return self.ledger.spent_msat(session_id=self.session_id)

    def left_msat(self, now: float | None = None) -> int | None:
        """What may still be spent now (min of daily and session room, ≥ 0), or None if unlimited.

        The per-job cap is separate (`per_job_msat`). Advisory: only `reserve` is binding."""
        room: list[int] = []
        if self.daily_msat is not None:
            room.append(self.daily_msat - self.spent_today_msat(now))
        if self.session_msat is not None:
            room.append(self.session_msat - self.spent_session_msat())
        return max(0, min(room)) if room else None

    def check(self, amount_msat: int, now: float | None = None) -> None:
        """Raise PaymentRefused ("above_max" / "above_budget") if `amount_msat` may not be spent now."""
        if self.per_job_msat is not None and amount_msat > self.per_job_msat:
            raise PaymentRefused(ABOVE_MAX, f"{amount_msat} msat is above the per-job cap of {self.per_job_msat} msat")
        left = self.left_msat(now)
        if left is not None and amount_msat > left:
            raise PaymentRefused(ABOVE_BUDGET, f"{amount_msat} msat is above what is left of the budget ({left} msat)")

    # -- holds (reserve a job's bid before publishing it) ---------------------------------------
    def held_msat(self) -> int:
        """Msats held by jobs in flight that have not paid yet."""
        with self._hold_lock:
            return sum(h.msat for h in self._holds)

    def session_room_msat(self) -> int | None:
        """What the session may still commit: its budget minus spent and held (None: no session budget)."""
        if self.session_msat is None:
            return None
        with self._hold_lock:
            return max(0, self.session_msat - self.spent_session_msat() - sum(h.msat for h in self._holds))

    async def hold(self, want_msat: int | None) -> Hold | None:
        """Set aside up to `want_msat` (the per-job cap when None) for one job, before it is sent.

        Returns the Hold (its `msat` is the job's bid), or None when there is no session budget
        (nothing to share). While other jobs' holds take the room this job would want, it waits
        for them to settle; when nothing else is held, it takes what is left (possibly less than
        wanted). Raises PaymentRefused("above_budget") when the session budget is used up."""
        if self.session_msat is None:
            return None
        caps = [v for v in (want_msat, self.per_job_msat) if v is not None]
        want = min(caps) if caps else None
        while True:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future | None = None
            with self._hold_lock:
                spent = self.spent_session_msat()
                others = sum(h.msat for h in self._holds)
                room = max(0, self.session_msat - spent - others)
                take = room if want is None else min(want, room)
                if take == want or not self._holds:
                    if take == 0 and 0 < self.session_msat <= spent and want != 0:
                        raise PaymentRefused(ABOVE_BUDGET, f"the session budget is used up ({spent} of "
                                                           f"{self.session_msat} msat spent); no job was sent",
                                             hint=SESSION_HINT)
                    hold = Hold(take)
                    self._holds.append(hold)
                    return hold
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
            try:
                await waiter
            finally:
                with self._hold_lock:
                    self._waiters = [(lp, f) for lp, f in self._waiters if f is not waiter]

    def release(self, hold: Hold | None) -> None:
        """Return what a job held and did not pay (call when the job is over, whatever happened)."""
        if hold is None:
            return
        with self._hold_lock:
            if hold.active:
                hold.active = False
                self._holds = [h for h in self._holds if h is not hold]
        self._wake()

    def _consume(self, job_id: str) -> None:
        """The job's payment intent is in the ledger: its hold has done its job."""
        with self._hold_lock:
            for h in self._holds:
                if h.job_id == job_id:
                    h.active = False
            self._holds = [h for h in self._holds if h.active]
        self._wake()

    def _wake(self) -> None:
        with self._hold_lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed
                pass

    # -- binding -------------------------------------------------------------------------------
    def _intent(self, amount_msat: int, now: float | None, **receipt: str) -> dict:
        """The per-job cap check plus the `record_intent` arguments that check the other limits."""
        if self.per_job_msat is not None and amount_msat > self.per_job_msat:
            raise PaymentRefused(ABOVE_MAX, f"{amount_msat} msat is above the per-job cap of {self.per_job_msat} msat")
        limits = SpendLimits(daily_msat=self.daily_msat, session_msat=self.session_msat, session_id=self.session_id)
        return dict(receipt, amount_msat=amount_msat, session_id=self.session_id, limits=limits, now=now)

    def reserve(self, amount_msat: int, *, job_id: str, provider: str, payment_hash: str, bolt11: str,
                now: float | None = None) -> Receipt:
        """Atomically check every limit and record the pending payment intent.

        Raises PaymentRefused: "above_max", "above_budget", or "already_paid" (the job or the
        hash already has a payment). On success the amount counts as spent until the receipt
        is marked failed."""
        receipt = self.ledger.record_intent(**self._intent(amount_msat, now, job_id=job_id, provider=provider,
                                                           payment_hash=payment_hash, bolt11=bolt11))
        self._consume(job_id)
        return receipt

    async def reserve_async(self, amount_msat: int, *, job_id: str, provider: str, payment_hash: str,
                            bolt11: str, now: float | None = None) -> Receipt:
        """`reserve` with the intent written on the ledger's writer thread (same checks, one transaction)."""
        receipt = await self.ledger.record_intent_async(**self._intent(amount_msat, now, job_id=job_id,
                                                                       provider=provider, payment_hash=payment_hash,
                                                                       bolt11=bolt11))
        self._consume(job_id)
        return receipt

    async def pay(self, wallet: Wallet, invoice: DecodedInvoice, *, job_id: str, provider: str) -> Receipt:
        """Reserve, pay through `wallet`, and close the receipt: the exactly-once payment step.

        - limits exceeded / job or hash already paid -> PaymentRefused, nothing paid;
        - the wallet refuses with a typed error (no money moved) -> receipt failed, error re-raised;
        - outcome unknown (timeout, unreachable, crash) -> the wallet is asked with
          lookup_payment; if still unknown the receipt stays 'pending' (Ledger.recover settles it
          later) and the error is re-raised. The job is never paid a second time meanwhile.
        `invoice` should come from `pylon.customer.invoice_check.check_invoice`."""
        if invoice.amount_msat is None:
            raise PaymentRefused(NO_AMOUNT, "invoice has no amount")
        receipt = await self.reserve_async(invoice.amount_msat, job_id=job_id, provider=provider,
                                           payment_hash=invoice.payment_hash, bolt11=invoice.bolt11)
        try:
            payment = await wallet.pay_invoice(invoice.bolt11, max_msat=invoice.amount_msat)
        except (AlreadyPaid, WalletTimeout, WalletUnreachable) as exc:
            return await self._settle_unknown(wallet, receipt, exc)
        except WalletError as exc:
            await self.ledger.mark_failed_async(receipt.payment_hash, f"{type(exc).__name__}: {exc}")
            self._wake()  # no money moved: the room is back
            raise
        except BaseException as exc:  # cancellation or a bug mid-payment: outcome unknown, keep it pending
            log.warning("payment for job %s interrupted (%s); left pending for recovery", job_id[:12], type(exc).__name__)
            raise
        if payment.payment_hash.lower() != invoice.payment_hash.lower() or not payment.preimage_matches():
            log.warning("wallet returned a preimage that does not match hash %s", invoice.payment_hash[:12])
        return await self.ledger.mark_paid_async(receipt.payment_hash, preimage=payment.preimage,
                                                 fee_msat=payment.fee_msat)

    async def _settle_unknown(self, wallet: Wallet, receipt: Receipt, exc: WalletError) -> Receipt:
        """Ask the wallet what became of a payment whose outcome is unknown (Ledger.settle_unknown
        records it); a paid receipt is returned, anything else re-raises `exc`. After a timeout
        or an unreachable wallet, "no payment" may mean "not yet": the receipt stays pending."""
        try:
            state = await wallet.lookup_payment(receipt.payment_hash)
        except WalletError:
            raise exc from None
        maybe_in_flight = isinstance(exc, (WalletTimeout, WalletUnreachable))
        settled = await self.ledger.settle_unknown(
            wallet, receipt.payment_hash, state,
            failed_reason=None if maybe_in_flight else f"{type(exc).__name__}: {exc}")
        if settled is not None and settled.status == "paid":
            return settled
        raise exc
