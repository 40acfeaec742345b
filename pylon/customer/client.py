"""The customer side (journey 1): `PylonClient.ask()` and `.stream()` over NIP-90 kind 5050.

How one ask runs, and why in this order:

1. One subscription per client for feedback and results addressed to us (`kinds 7000/6050,
   #p = us`, since the client started) is opened and its EOSE awaited when the client starts, and a job's
   route (job id -> queue) is registered before its request is published: a fast
   provider's answer can never slip in between. One subscription, not one per job, because
   relays cap subscriptions per connection (strfry and ours: 200) and a REQ/EOSE round trip
   per job is pure latency; events are routed to their job by the `e` tag.
2. Every incoming event was signature-checked by the pool; here it must also name our job
   (`e`) and us (`p`) and come from an acceptable provider (the targeted one, if any).
3. `payment-required` goes through `_on_payment_required` (the payment hook). Without a
   wallet a priced quote is refused with a PaymentError naming the amount; with one,
   pylon.customer.payments checks the invoice (amount tag, bid, caps, budgets, expiry,
   network, never-paid hash), pays the job's first acceptable quote exactly once and keeps
   the receipt; from then on only the paid provider's result counts.
4. `partial` feedback is reassembled by its `offset` tag (see pylon.jobs.nip90) and streamed.
5. The first valid result wins; any others that arrive while the client still listens are
   recorded in `outcome.other_results`, never returned.
6. Timeout, Ctrl-C or `JobStream.aclose()` publish a kind-5 cancellation of the request
   and raise JobTimeout / NoProviderAnswered / JobCancelled saying so.

When the job is not targeted, several providers may answer: an `error` from one is recorded
and the client keeps waiting for the others (up to `error_grace_s` after every provider that
spoke has failed), then raises ProviderError with their reasons, unless the live
announcements show nobody else who could take it (pylon.customer.live): then at once. An
`error` (or a refused quote) from a provider that never started on the job is a decline: it
starts no grace while live providers that have not answered remain (`_grace`). A targeted job
(`provider=`) has no one else to wait for: its provider's error is raised at once, and a
targeted provider the live view knows is gone (withdrawn) ends it too (ProviderUnavailable).

Failover (`_run_with_failover`): a job whose provider at work (processing, partial, paid, or
the targeted one) errors or stalls, nothing paid, is asked again as a new request naming the
failed providers in AVOID_TAG (pylon.jobs.nip90), so Pylon providers skip it; untargeted jobs
by default, targeted ones only with failover=True, and then re-encrypted to another live
provider, never in clear (docs/PROTOCOL.md, "Failover and the avoid tag"). An `error` from a
provider that only declined the job makes no re-send: the others have the request already.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Final, Literal, Sequence

from pydantic import BaseModel, Field

from pylon.errors import (  # the job's errors live in the one tree; re-exported here
    ConfigError, JobCancelled, JobError, JobTimeout, NoProviderAnswered, PaymentError, PaymentRefused, ProviderError,
    ProviderUnavailable, PylonError, RelayError,
)
from pylon.customer.invoice_check import NO_WALLET
from pylon.home import identity_path
from pylon.jobs.params import check_params
from pylon.jobs.nip90 import (
    KIND_FEEDBACK, KIND_RESULT, JobFeedback, JobParseError, JobRequest, JobResult, build_cancellation,
)
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys, normalize_pubkey, npub_of
from pylon.customer.ledger import Ledger
from pylon.customer.defaults import DEFAULT_DAILY_BUDGET_MSAT, DEFAULT_MAX_MSAT, SESSION_HINT
from pylon.customer.invoice_check import ABOVE_BID, ABOVE_BUDGET, ABOVE_MAX, NO_INVOICE
from pylon.customer.invoice_check import PaymentRefused as InvoiceRefused
from pylon.customer.budget import Budget, Hold
from pylon.jobs.keyed import (
    DELIVERY_PARAM, KEY_MODE, FraudProof, SealError, build_fraud_report, delivery_hash, open_sealed_result,
    parse_sealed_result,
)
from wallet.bolt11_codec import decode_bolt11
from wallet.errors import InvoiceInvalid
from pylon.customer.invoice_check import MALFORMED
from pylon.customer.offers import DEFAULT_DECISION_WINDOW_S, DEFAULT_ROUTE, Offer, OfferBook, check_route, rank
from pylon.customer.payments import ClientPayments, JobPayment, PaidNoResult, Quote
from pylon.customer.scoreboard import ProviderScore, Scoreboard
from pylon.customer.clock import SkewWatch, default_clock
from pylon.customer.fetch import JobLookup, lookup_job, recover_paid_jobs
from pylon.customer.live import LiveProviders
from pylon.customer.refunds import request_refund
from pylon.jobs.refund import refund_offer
from pylon.customer.inbox import MAX_STREAM_CHARS, JobInbox, PartialBuffer, ProviderFlood
from pylon.relay.pool import RelayPool
from wallet.base import Wallet

log = logging.getLogger("pylon.customer.client")

Stage = Literal["published", "quoted", "payment", "processing", "partial", "done", "error", "cancelled"]


class JobStalled(JobTimeout):
    """The provider(s) working on the job went silent (no reply, or a stream that stopped)."""

    def __init__(self, message: str, providers: list[str], job_id: str = "") -> None:
        super().__init__(message)
        self.providers = providers
        self.job_id = job_id


# ask()'s arguments that go into the request (JobRequest.from_prompt); the others steer the run
JOB_PARAMS: Final = ("model", "max_tokens", "temperature", "top_p", "top_k", "frequency_penalty",
                     "response_format", "stop", "seed", "tools", "tool_choice")

DEFAULT_STALL_S = 30.0  # silence from a provider at work that counts as a stall
DEFAULT_FAILOVER = 2  # new requests after an error or a stall (nothing paid; targeted jobs only with failover=True)
LIVE_RECHECK_S = 5.0  # a targeted provider is taken for gone only on a view of the announcements this recent
GONE_REPLY_GRACE_S = 1.5  # ... and after this long without a reply from it (an online one says why)
FAILOVER_FIRST_REPLY_S = 5.0  # a re-offered job nobody replies to within this ends with the first failure


# ------------------------------------------------------------------------------ outcome
class Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class OtherResult(BaseModel):
    """A result that lost the race (recorded, not returned)."""

    provider: str
    text: str
    event_id: str
    usage: Usage = Field(default_factory=Usage)
    amount_msat: int | None = None


class AskOutcome(BaseModel):
    """What an ask produced: the answer, who gave it, what it used and cost, and when."""

    text: str
    job_id: str
    provider: str
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    paid_msat: int = 0
    fee_msat: int = 0
    amount_msat: int | None = None  # what the provider's result asked for
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI-shaped calls, when the job offered tools
    finish_reason: str | None = None  # the backend's ("stop", "length" when cut at max_tokens), if the provider said
    encrypted: bool = False
    result_event_id: str = ""
    timings: dict[str, float] = Field(default_factory=dict)  # seconds since the ask started
    other_results: list[OtherResult] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)  # provider -> error from others
    quotes: list[dict[str, Any]] = Field(default_factory=list)  # every payment-required and what we did
    receipt: dict[str, Any] | None = None  # the payment's receipt (pylon.customer.ledger.Receipt), if we paid
    offers: list[dict[str, Any]] = Field(default_factory=list)  # every provider's offer, taken or left and why
    delivery: str = ""  # "key": paid for the key to a result already published (pylon.jobs.keyed)
    failover: list[dict[str, Any]] = Field(default_factory=list)  # earlier attempts: job id, providers, why
    route: str = ""  # the routing policy the offers were decided by (untargeted jobs)


@dataclass(slots=True)
class JobProgress:
    """One step of a job, for progress displays."""

    stage: Stage
    detail: str = ""
    provider: str | None = None
    text: str | None = None  # the new text, for `partial`
    amount_msat: int | None = None
    elapsed_s: float = 0.0


ProgressCallback = Callable[[JobProgress], None]


# ------------------------------------------------------------------------------ job state
class _LiveView:
    """Queued to a job (JobInbox.offer) when the live-provider view is back: is its targeted
    provider gone, or every live provider avoided?"""

    content = ""
    pubkey = ""


_LIVE_VIEW: Final = _LiveView()


@dataclass(slots=True)
class _JobState:
    request: JobRequest
    event: Event
    target: str | None
    started: float
    on_progress: ProgressCallback | None
    on_delta: Callable[[str], None] | None
    responders: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    refusals: list[PaymentError] = field(default_factory=list)
    winner: JobResult | None = None
    others: list[OtherResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stream_from: str | None = None
    streamed: str = ""
    pending: PartialBuffer = field(default_factory=PartialBuffer)  # bounded (pylon.customer.inbox)
    paid_msat: int = 0
    fee_msat: int = 0
    finished: set[str] = field(default_factory=set)  # providers that sent error or result
    worked: set[str] = field(default_factory=set)  # providers that were at work on it (processing, partial, paid)
    payment: JobPayment = field(default_factory=JobPayment)
    bid_msat: int | None = None  # the bid the caller gave (the tag may be lowered to max_msat)
    book: OfferBook = field(default_factory=OfferBook)  # offers and the decision (pylon.customer.offers)
    decide_at: float | None = None  # monotonic time the pending quotes are decided
    route: str = DEFAULT_ROUTE
    window_s: float = DEFAULT_DECISION_WINDOW_S
    avoid: frozenset[str] = frozenset()
    first_seen: dict[str, float] = field(default_factory=dict)  # provider -> seconds to its first event
    last_seen: dict[str, float] = field(default_factory=dict)  # provider -> monotonic time of its last event
    gave_up: bool = False
    sealed: dict[str, JobResult] = field(default_factory=dict)  # provider -> its sealed result (pay for the key)
    delivery: str = ""  # "key" when the answer was bought as a key
    fraud_report: Event | None = None
    stall_s: float | None = None  # a provider working for us that is silent this long has stalled
    first_reply_s: float | None = None  # give up this soon when nobody replies (failover attempts)
    stalled: set[str] = field(default_factory=set)
    watch_silent: bool = False  # a targeted job that may fail over: a provider that never replies has stalled too
    held_msat: int | None = None  # the session budget held for this job (Budget.hold)
    gone_seen_at: float | None = None  # monotonic time the targeted provider was first seen gone
    cancel_sent: bool = False  # its kind-5 cancellation was published

    @property
    def job_id(self) -> str:
        return self.event.id

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def mark(self, name: str) -> None:
        self.timings.setdefault(name, round(self.elapsed(), 6))

    def progress(self, stage: Stage, detail: str = "", **kwargs: Any) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(JobProgress(stage, detail, elapsed_s=self.elapsed(), **kwargs))
            except Exception:  # a display bug must not break the job
                log.exception("progress callback failed")

    def add_other(self, result: JobResult, event: Event) -> None:
        """A result that is not the answer: recorded once per provider (`AskOutcome.other_results`)."""
        if all(o.provider != result.provider for o in self.others):
            self.others.append(OtherResult(
                provider=result.provider, text=result.text, event_id=event.id, amount_msat=result.amount_msat,
                usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)))

    def accept_partial(self, fb: JobFeedback) -> str:
        """New text from a `partial` (deltas placed by offset; duplicates and gaps handled)."""
        if self.stream_from is None:
            self.stream_from = fb.provider
        elif fb.provider != self.stream_from:
            return ""
        content = fb.content
        if fb.offset is None:  # another implementation: a cumulative text or a sample
            delta = content[len(self.streamed):] if content.startswith(self.streamed) else content
        else:
            self.pending.add(fb.offset, content, fb.provider)  # ProviderFlood past its bounds
            delta = self.pending.take(len(self.streamed))
        if len(self.streamed) + len(delta) > MAX_STREAM_CHARS:
            raise ProviderFlood(fb.provider, f"over {MAX_STREAM_CHARS} characters of streamed text")
        self.streamed += delta
        return delta


# ------------------------------------------------------------------------------ client
class PylonClient:
    """Ask the swarm: one RelayPool shared by every ask. Use as an async context manager."""

    def __init__(
        self,
        relays: Sequence[str],
        *,
        keys: Keys | None = None,
        wallet: Wallet | None = None,
        max_msat: int | None = None,
        budget_msat: int | None = None,
        daily_budget_msat: int | None = None,
        pool: RelayPool | None = None,
        ledger: Ledger | None = None,
        budget: Budget | None = None,
        decision_window_s: float = DEFAULT_DECISION_WINDOW_S,
        route: str = DEFAULT_ROUTE,
        avoid: Sequence[str] = (),
        scoreboard: Scoreboard | None = None,
        keep_scores: bool = True,
        key_delivery: bool = True,
        stall_s: float | None = DEFAULT_STALL_S,
        failover: int = DEFAULT_FAILOVER,
        publish_reviews: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`decision_window_s`, `route` and `avoid` decide among offers (pylon.customer.offers);
        outcomes go to `scoreboard` (PYLON_HOME/scores.sqlite unless given; none with keep_scores=False)."""
        self.keys = keys if keys is not None else Keys.load_or_create(identity_path())
        self.decision_window_s = max(0.0, float(decision_window_s))
        self.key_delivery = key_delivery  # ask providers to sell the key to a sealed result (pylon.jobs.keyed)
        self.stall_s = stall_s  # silence from the provider working for us that counts as a stall (None: never)
        self.failover = max(0, int(failover))  # new requests after a failure, untargeted jobs only
        self.publish_reviews = publish_reviews  # signed NIP-32 reviews after each job (pylon.customer.reviews)
        self._review_tasks: set[asyncio.Task] = set()
        self.route = check_route(route)
        self.avoid = frozenset(normalize_pubkey(p) for p in avoid)
        self.scoreboard = scoreboard if scoreboard is not None else (Scoreboard() if keep_scores else None)
        self._own_scoreboard = scoreboard is None
        self.relays = list(relays) if relays else (pool.urls if pool is not None else [])
        self.wallet = wallet
        # money-safe defaults (pylon.customer.defaults): None means "the default", never "unlimited"
        self.max_msat = DEFAULT_MAX_MSAT if max_msat is None else max_msat
        self.budget_msat = budget_msat
        self.daily_budget_msat = DEFAULT_DAILY_BUDGET_MSAT if daily_budget_msat is None else daily_budget_msat
        max_msat, daily_budget_msat = self.max_msat, self.daily_budget_msat
        self.spent_msat = 0  # this session's payments (amount + fee)
        # receipts, budgets and invoice checks (a Ledger under PYLON_HOME unless one is given)
        self.payments: ClientPayments | None = None
        if wallet is not None:
            self.payments = ClientPayments(wallet, max_msat=max_msat, budget_msat=budget_msat,
                                           daily_budget_msat=daily_budget_msat, ledger=ledger, budget=budget)
        self.pool = pool
        self._own_pool = pool is None
        self._routes: dict[str, JobInbox] = {}
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self._live: LiveProviders | None = None  # who else is there, for failover (pylon.customer.live)
        self._sub: Any = None
        self._dispatcher: asyncio.Task | None = None
        self._recovery: asyncio.Task | None = None
        self._clock = clock or default_clock()  # stamps requests (pylon.customer.clock; a test hook)
        self.skew = SkewWatch(self._clock)

    @property
    def pubkey(self) -> str:
        return self.keys.public_key

    async def __aenter__(self) -> "PylonClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self.payments is not None:
            await self.payments.start()  # wallet connected; receipts a crash left pending settled
        if self.pool is None:
            self.pool = RelayPool(self.relays, keys=self.keys)
        if self._own_pool:
            await self.pool.__aenter__()
        await self.pool.wait_connected(fail_fast=True)  # a refused relay is reported at once
        self._live = LiveProviders(self.pool)
        # Live replies only (`limit: 0`): earlier sessions' replies are not replayed, and no `since`
        # from our clock, which may be off (replies are routed by their job id, `e`). After a
        # reconnect the pool resubscribes from the last event seen; an ask that ends without its
        # result looks its job up by id (pylon.customer.fetch) before giving up.
        flt = Filter.of(kinds=[KIND_FEEDBACK, KIND_RESULT], p=[self.pubkey], limit=0)
        self._sub = self.pool.subscribe([flt])
        await self._sub.open()
        with contextlib.suppress(asyncio.TimeoutError):
            await self._sub.wait_eose(5.0)
        self._dispatcher = asyncio.create_task(self._dispatch(self._sub), name="pylon-client:dispatch")
        if self.payments is not None:  # paid jobs a crashed session never got an answer for
            self._recovery = asyncio.create_task(self.recover_paid_jobs(), name="pylon-client:recover")

    async def _dispatch(self, sub: Any) -> None:
        """Route every reply to the queue of the job it names (`e` tag); others are dropped."""
        try:
            async for event in sub:
                self.skew.observe(event.created_at)
                tag = event.first_tag("e")
                queue = self._routes.get(tag[1]) if tag is not None and len(tag) > 1 else None
                if queue is not None:
                    queue.offer(event)  # bounded: a flood ends that job with ProviderFlood
        except RelayError as exc:  # the relays closed our subscription
            for queue in self._routes.values():
                queue.put_nowait(exc)
        except asyncio.CancelledError:
            raise

    async def close(self) -> None:
        if self._review_tasks:  # reviews in flight get a moment to reach the relays
            await asyncio.wait(list(self._review_tasks), timeout=3.0)
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recovery
            self._recovery = None
        if self._live is not None:
            await self._live.close()
            self._live = None
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._dispatcher
            self._dispatcher = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.close()
            self._sub = None
        if self.pool is not None and self._own_pool:
            await self.pool.close()
            self.pool = None
        if self.payments is not None:
            self.payments.close()
        if self.scoreboard is not None and self._own_scoreboard:
            self.scoreboard.close()
        elif self.scoreboard is not None:
            self.scoreboard.flush()

    # -------------------------------------------------------------------- public API
    async def ask(
        self,
        prompt: str | list[dict],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        frequency_penalty: float | None = None,
        response_format: dict | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
        provider: str | None = None,
        bid_msat: int | None = None,
        timeout: float = 60.0,
        encrypted: bool | None = None,
        on_progress: ProgressCallback | None = None,
        error_grace_s: float = 3.0,
        collect_s: float = 0.0,
        collect_max: int | None = None,
        route: str | None = None,
        avoid: Sequence[str] = (),
        failover: bool | None = None,
    ) -> AskOutcome:
        """Run one job and return the first valid result.

        `provider` (npub or hex) targets one provider; the job is then encrypted unless
        `encrypted=False`. `failover`: ask again elsewhere when the provider at work errors or
        stalls, nothing paid (None: yes for an untargeted job, no for a targeted one; a targeted
        job fails over encrypted to another live provider, or untargeted if it was sent in clear). `collect_s` keeps listening that long after the first result to
        record other providers' results (stopping early at `collect_max` results in all).
        """
        return await self._ask(prompt, locals(), on_delta=None)

    def stream(self, prompt: str | list[dict], **kwargs: Any) -> "JobStream":
        """Like ask(), as an async iterator of text as it arrives; `.outcome` when done."""
        return JobStream(self, prompt, kwargs)

    async def fetch_result(self, job_id: str, *, timeout: float = 5.0) -> JobLookup:
        """What the relays hold for one of our jobs: its result (decrypted; only the paid
        provider's when we paid one), else its last error and any refund offered."""
        if self.pool is None:
            raise RelayError("PylonClient is not started: use `async with PylonClient(...)`")
        receipt = self.payments.ledger.intent_for_job(job_id) if self.payments is not None else None
        found = await lookup_job(self.pool, self.keys, job_id, provider=receipt.provider if receipt else None,
                                 timeout=timeout, preimage=receipt.preimage if receipt else None)
        if receipt is not None and found.result is not None and found.result.event is not None:
            await self.payments.ledger.mark_result_async(job_id, found.result.event.id)  # type: ignore[union-attr]
        return found

    async def recover_paid_jobs(self) -> list[Any]:
        """Paid receipts of gone sessions with no result yet: fetch the results from the relays,
        or claim the refund their provider offered (pylon.customer.fetch). Runs at start."""
        if self.payments is None or self.pool is None:
            return []
        try:
            return await recover_paid_jobs(self.payments.ledger, self.payments.wallet, self.keys, self.pool)
        except Exception as exc:  # bookkeeping: never breaks the session
            log.info("paid-job recovery skipped: %s: %s", type(exc).__name__, exc)
            return []

    async def cancel(self, job_id: str, providers: Sequence[str] = ()) -> None:
        """Publish a kind-5 cancellation of our job (best effort)."""
        assert self.pool is not None
        event = build_cancellation(self.keys, [job_id])
        if providers:
            event = Event.build(self.keys, event.kind, event.content,
                                [*event.tags, *(["p", p] for p in sorted(set(providers)))])
        try:
            await self.pool.publish(event, timeout=3.0)
        except RelayError as exc:
            log.warning("cancellation of %s not accepted: %s", job_id[:12], exc)

    # -------------------------------------------------------------------- the job
    def _ask(self, prompt: str | list[dict], args: dict[str, Any],
             on_delta: Callable[[str], None] | None) -> Coroutine[Any, Any, AskOutcome]:
        """ask()'s keyword arguments (`args`: every one of them, e.g. its locals()) as one `_run`;
        stream() comes here too, with ask()'s defaults filled in (`_ASK_DEFAULTS`)."""
        params = {k: args[k] for k in JOB_PARAMS}
        steer = {k: args[k] for k in _ASK_DEFAULTS if k not in JOB_PARAMS}
        return self._run(prompt, params, on_delta=on_delta, **steer)

    async def _run(self, prompt: str | list[dict], params: dict[str, Any], *, bid_msat: int | None,
                   **kwargs: Any) -> AskOutcome:
        """One job within the session budget: its bid is held (Budget.hold) before it is sent,
        so concurrent jobs never bid more than the session has left, and released after."""
        check_params(params)  # a value outside its documented range is refused before anything is sent
        if self.payments is None or self.payments.budget.session_msat is None:
            return await self._run_with_failover(prompt, params, bid_msat=bid_msat, hold=None, **kwargs)
        caps = [v for v in (bid_msat, self.max_msat) if v is not None]
        hold = await self.payments.budget.hold(min(caps) if caps else None)
        try:
            held_bid = bid_msat if hold is None else (hold.msat if bid_msat is None else min(bid_msat, hold.msat))
            return await self._run_with_failover(prompt, params, bid_msat=held_bid, hold=hold, **kwargs)
        finally:
            self.payments.budget.release(hold)

    async def _run_job(
        self, prompt: str | list[dict], params: dict[str, Any], *, provider: str | None, bid_msat: int | None,
        timeout: float, encrypted: bool | None, on_progress: ProgressCallback | None,
        on_delta: Callable[[str], None] | None, error_grace_s: float, collect_s: float, collect_max: int | None,
        hold: Hold | None = None, route: str | None = None, avoid: Sequence[str] = (),
        first_reply_s: float | None = None, watch_silent: bool = False,
    ) -> AskOutcome:
        if self.pool is None or self._sub is None:
            raise RelayError("PylonClient is not started: use `async with PylonClient(...)`")
        started = time.monotonic()
        target = normalize_pubkey(provider) if provider else None
        explicit_bid = bid_msat
        # the bid tag says what we agree to pay: the bid capped by the per-job cap (a client
        # without a wallet pays nothing, so only an explicit bid is sent)
        caps = [v for v in (bid_msat, self.max_msat if self.wallet is not None else None) if v is not None]
        bid_msat = min(caps) if caps else None
        avoided = self.avoid | frozenset(normalize_pubkey(p) for p in avoid)
        if target is not None and target in avoided:  # it would ignore the job's only provider: never answered
            raise ConfigError(f"provider {npub_of(target)} is both the one this job is sent to and avoided: "
                              "nobody could answer it", hint="drop it from avoid, or ask without provider=")
        if self._live is not None:
            self._live.refresh()  # who else is there should this job fail; is a targeted provider gone (pylon.customer.live)
        request = JobRequest.from_prompt(
            prompt, **{k: v for k, v in params.items() if v is not None},
            bid_msat=bid_msat, providers=[target] if target else [], relays=self.pool.urls,
            avoid=sorted(avoided) if target is None else [],  # the avoided skip it (pylon.jobs.nip90 AVOID_TAG)
            stream=on_delta is not None,  # partials are asked for only by a reader of them (stream())
        )
        if self.wallet is not None and self.key_delivery:
            request.extra_params[DELIVERY_PARAM] = KEY_MODE  # pay for the key where the provider can (pylon.jobs.keyed)
        encrypt = (target is not None) if encrypted is None else encrypted
        # The same prompt asked twice in one second would be the same event (same id): the
        # relay and the provider would take it as a duplicate and never answer the second.
        created_at = int(self._clock())
        while True:
            event = request.to_event(self.keys, encrypted=encrypt, created_at=created_at)
            if event.id not in self._recent_ids:
                break
            created_at += 1
        self._recent_ids[event.id] = None
        if hold is not None:
            hold.job_id = event.id  # paying this job consumes its hold
        while len(self._recent_ids) > 10_000:
            self._recent_ids.popitem(last=False)
        state = _JobState(request, event, target, started, on_progress, on_delta)
        state.bid_msat = explicit_bid
        state.route = check_route(route) if route else self.route
        state.window_s = self.decision_window_s
        state.stall_s = self.stall_s
        state.first_reply_s = first_reply_s
        state.watch_silent = watch_silent
        state.avoid = avoided
        state.held_msat = hold.msat if hold is not None else None
        queue = JobInbox()
        self._routes[event.id] = queue
        try:
            published = await self.pool.publish(event)
            state.mark("published")
            state.progress("published", f"job {event.id[:12]}… on {len(published.accepted_by)} relay(s)")
            if self._live is not None and (target is not None or (state.avoid and first_reply_s is None)):
                # is the targeted provider gone? is every live provider avoided?
                self._live.when_known(lambda: queue.offer(_LIVE_VIEW))
            deadline = started + timeout
            grace_deadline: float | None = None
            while state.winner is None:
                now = time.monotonic()
                limit = deadline if grace_deadline is None else min(deadline, grace_deadline)
                if state.first_reply_s is not None and not state.responders:
                    limit = min(limit, started + state.first_reply_s)  # a re-offered job: is anyone else there?
                if now >= limit and (now >= deadline or queue.empty()):
                    break  # (replies already here are read first: one may show a provider at work)
                if state.decide_at is not None and now >= state.decide_at:
                    await self._decide(state)  # the decision window closed: act on the offers
                    grace_deadline = await self._grace(state, grace_deadline, error_grace_s)  # refused: anyone left?
                    continue
                stall_at = self._stall_at(state)
                if stall_at is not None and now >= stall_at:
                    await self._on_stall(state)  # hands over to a quote, or raises JobStalled (failover)
                    continue
                wake = min(x for x in (limit, state.decide_at, stall_at) if x is not None)
                if queue.empty():
                    # asyncio.timeout, not wait_for: on 3.11 wait_for wraps every get in a new task
                    try:
                        async with asyncio.timeout(wake - now):
                            incoming = await queue.get()
                    except TimeoutError:
                        continue  # the top of the loop says which deadline passed
                else:
                    incoming = queue.get_nowait()
                if isinstance(incoming, Exception):
                    raise incoming
                if incoming is _LIVE_VIEW:
                    await self._check_target(state)  # raises ProviderUnavailable when it is known gone
                    continue
                await self._handle(state, incoming)
                grace_deadline = await self._grace(state, grace_deadline, error_grace_s)
            if state.winner is None:
                await self._give_up(state, timeout)
            await self._collect_others(state, queue, collect_s, collect_max)
        except PylonError as exc:
            if isinstance(exc, ProviderError):
                setattr(exc, "job_id", event.id)  # the failover history names the job
            # failed, stalled, refused, gone: nobody should run it now (a provider started later
            # would take it from its look-back)
            await self._cancel_quietly(state)
            raise
        except asyncio.CancelledError:
            await self._cancel_quietly(state)
            state.progress("cancelled", "job cancelled; a cancellation (kind 5) was published")
            raise JobCancelled(f"job {event.id[:12]}… cancelled; a cancellation (kind 5) was published") from None
        finally:
            self._routes.pop(event.id, None)
            self._score_job(state)
            if self.publish_reviews:
                self._publish_reviews(state)
        if state.payment.receipt is not None and state.winner is not None and state.winner.event is not None:
            # bookkeeping only, not waited for: recovery looks for paid jobs without one
            self.payments.ledger.mark_result_soon(state.job_id, state.winner.event.id)  # type: ignore[union-attr]
        return self._outcome(state)

    async def _give_up(self, state: _JobState, timeout: float) -> None:
        """No result: cancel the job and raise the most telling error."""
        job = state.job_id[:12]
        if state.payment.paid:
            # the live reply may have been lost in a relay outage: look the job up by its id
            with contextlib.suppress(Exception):
                found = await lookup_job(self.pool, self.keys, state.job_id, provider=state.payment.provider,
                                         timeout=3.0)
                if found.result is not None and found.result.event is not None:
                    self._on_result(state, found.result.event)
                    if state.winner is not None:
                        return
                if found.refund_offer_msat and found.error is not None:
                    await self._refund_offered(state)
            raise self._paid_no_result(state, f"within {timeout:g}s")
        if state.refusals and not state.errors:
            raise state.refusals[0]
        at_work = (state.responders - state.finished) & state.worked  # still at it when time ran out
        if state.errors and not at_work:
            reasons = "; ".join(f"{npub_of(p)}: {r}" for p, r in state.errors.items())
            state.progress("error", reasons)
            # only a provider that was at work on it (or was chosen) failed it: the others declined it
            failed = [p for p in state.errors if p in state.worked or p == state.target]
            raise ProviderError(f"provider error for job {job}…: {reasons}", state.errors, failed=failed)
        if state.refusals and not at_work:
            raise state.refusals[0]
        state.progress("cancelled", f"no result within {timeout:g}s")
        if not state.responders and state.target is not None:
            live = self._live.known(None) if self._live is not None else None
            seen = "" if live is None else (
                " (it has a live announcement on these relays)" if any(p.pubkey == state.target for p in live)
                else " (it has no live announcement on these relays)")
            raise NoProviderAnswered(
                f"no provider answered job {job}… within {timeout:g}s: the targeted provider {npub_of(state.target)} "
                f"never answered{seen}; it was cancelled (kind 5 published)",
                hint="check the npub and the relays (`pylon providers` lists the live providers); or ask without "
                     "--provider (provider= in code) to let any of them answer")
        if not state.responders:
            raise NoProviderAnswered(
                f"no provider answered job {job}… within {timeout:g}s; it was cancelled (kind 5 published). "
                "Check the relays and `pylon providers`.")
        raise JobTimeout(
            f"no result for job {job}… within {timeout:g}s from {len(state.responders)} provider(s) that "
            "acknowledged it; it was cancelled (kind 5 published). Try a longer timeout (timeout=; --timeout on the command line).")

    async def _cancel_quietly(self, state: _JobState) -> None:
        """Publish the job's kind-5 cancellation (once): the customer no longer waits for it."""
        if state.cancel_sent or state.winner is not None:
            return
        state.cancel_sent = True
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.wait_for(self.cancel(state.job_id, sorted(state.responders)), 4.0))

    async def _collect_others(self, state: _JobState, queue: asyncio.Queue, collect_s: float,
                              collect_max: int | None) -> None:
        deadline = time.monotonic() + collect_s
        while collect_max is None or 1 + len(state.others) < collect_max:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and queue.empty():
                return
            if queue.empty():
                try:
                    async with asyncio.timeout(max(remaining, 0.001)):
                        incoming = await queue.get()
                except TimeoutError:
                    return
            else:
                incoming = queue.get_nowait()
            if isinstance(incoming, Exception):
                return
            if incoming is _LIVE_VIEW:
                continue
            await self._handle(state, incoming)

    async def _handle(self, state: _JobState, event: Event) -> None:
        e_tag = event.first_tag("e")
        if e_tag is None or e_tag[1:2] != [state.job_id]:
            return
        if self.pubkey not in event.tag_values("p"):
            return
        if state.target is not None and event.pubkey != state.target:
            log.debug("ignoring %s from %s: not the targeted provider", event.kind, event.pubkey[:12])
            return
        if event.pubkey in state.avoid:
            if all(o.provider != event.pubkey for o in state.book.offers):
                state.book.add(Offer(event.pubkey, "error", at_s=state.elapsed(), action="left",
                                     reason="avoided (--avoid)"))
            return
        state.responders.add(event.pubkey)
        state.mark("first_reply")
        state.first_seen.setdefault(event.pubkey, round(state.elapsed(), 6))
        state.last_seen[event.pubkey] = time.monotonic()
        if event.kind == KIND_RESULT:
            if delivery_hash(event) is not None:
                await self._on_sealed_result(state, event)
                return
            winner = state.winner
            self._on_result(state, event)
            self._note_result(state, event, winner)
            return
        try:
            fb = JobFeedback.from_event(event, self.keys)
        except JobParseError as exc:
            log.info("unusable feedback from %s: %s", event.pubkey[:12], exc)
            return
        if fb.status == "payment-required":
            await self._quoted(state, fb, fb.extra)
        elif fb.status == "processing":
            state.mark("processing")
            state.worked.add(fb.provider)
            state.progress("processing", fb.extra, provider=fb.provider)
            self._note_free_work(state, fb.provider)
        elif fb.status == "partial":
            if state.winner is not None:  # a partial published just before the result can arrive after it
                return
            state.worked.add(fb.provider)
            self._note_free_work(state, fb.provider)
            delta = state.accept_partial(fb)
            if delta:
                state.mark("first_partial")
                state.progress("partial", provider=fb.provider, text=delta)
                if state.on_delta is not None:
                    state.on_delta(delta)
        elif fb.status == "error":
            above = self._above_bid(state, fb)
            if above is not None:  # "price is N msat, above your bid": our limit, said as ours
                await self._refused(state, above, fb.provider)
                return
            reason = fb.extra or fb.content or "unspecified error"
            state.errors[fb.provider] = reason
            state.finished.add(fb.provider)
            self._note_failure(state, fb.provider, reason)
            state.progress("error", reason, provider=fb.provider)
            if state.payment.paid and fb.provider == state.payment.provider:
                await self._refund(state, fb)
                raise self._paid_no_result(state, f"; it reported: {reason}")
            if state.target is not None and not state.payment.paid:
                raise ProviderError(f"provider {npub_of(fb.provider)} could not run job {state.job_id[:12]}…: {reason}",
                                    state.errors, failed=[fb.provider])

    def _on_result(self, state: _JobState, event: Event) -> None:
        try:
            result = JobResult.from_event(event, self.keys)
        except JobParseError as exc:
            log.info("unusable result from %s: %s", event.pubkey[:12], exc)
            return
        if result.request_id != state.job_id or result.customer != self.pubkey:
            return
        state.finished.add(result.provider)
        if state.payment.paid and result.provider != state.payment.provider:
            state.add_other(result, event)  # only the paid provider's result counts
            return
        if state.winner is None:
            state.winner = result
            state.mark("result")
            if state.on_delta is not None:
                if result.provider == state.stream_from and result.text.startswith(state.streamed):
                    rest = result.text[len(state.streamed):]
                elif not state.streamed:
                    rest = result.text
                else:
                    rest = ""  # streamed text came from a provider that lost the race
                if rest:
                    state.streamed += rest
                    state.on_delta(rest)
            state.progress("done", provider=result.provider)
        elif result.provider != state.winner.provider:
            state.add_other(result, event)

    def _outcome(self, state: _JobState) -> AskOutcome:
        result = state.winner
        assert result is not None and result.event is not None
        return AskOutcome(
            text=result.text, job_id=state.job_id, provider=result.provider, model=result.model,
            usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            paid_msat=state.paid_msat, fee_msat=state.fee_msat, amount_msat=result.amount_msat,
            finish_reason=result.finish_reason, tool_calls=result.tool_calls,
            encrypted=result.encrypted, result_event_id=result.event.id, timings=dict(state.timings),
            other_results=list(state.others), errors=dict(state.errors),
            quotes=[q.to_dict() for q in state.payment.quotes],
            offers=state.book.close("not needed: the job was answered"), route=state.route if state.target is None else "",
            delivery=state.delivery,
            receipt=state.payment.receipt.to_dict() if state.payment.receipt is not None else None,
        )

    # -------------------------------------------------------------------- payment hook
    async def _quoted(self, state: _JobState, fb: JobFeedback, detail: str) -> None:
        """A quote, whether `payment-required` (pay first) or a sealed result (pay for the key):
        an untargeted job's priced quote waits for the decision window (pylon.customer.offers);
        otherwise it is paid now, or refused."""
        state.mark("quoted")
        state.progress("quoted", detail, provider=fb.provider, amount_msat=fb.amount_msat)
        if state.target is None and fb.amount_msat:
            self._offer_quote(state, fb)
            return
        try:
            await self._on_payment_required(state, fb)
        except PaymentError as exc:
            await self._refused(state, exc, fb.provider)

    async def _refused(self, state: _JobState, exc: PaymentError, provider: str) -> None:
        """A quote we do not pay: final for a targeted job (cancelled, raised); an untargeted one
        records it and waits for the other providers."""
        state.progress("error", str(exc), provider=provider)
        if state.target is not None:
            raise exc
        state.refusals.append(exc)
        state.finished.add(provider)

    async def _on_payment_required(self, state: _JobState, fb: JobFeedback) -> None:
        """The payment step between `payment-required` and `processing`.

        A quote of 0 msat (or none) needs nothing. Otherwise a wallet is required; `_pay`
        (filled in by the payments step) checks the invoice against the amount tag, the bid,
        `max_msat`, the budgets, the network and the payment history, pays exactly once,
        records a receipt and adds to `state.paid_msat` / `state.fee_msat`.
        """
        if not fb.amount_msat:
            return
        if not fb.bolt11:  # nostrdvm and others: an amount with no invoice means "zap me" (NIP-57)
            raise InvoiceRefused(NO_INVOICE, f"provider {npub_of(fb.provider)} asks {fb.amount_msat} msat without a "
                                 "bolt11 invoice (it expects a zap or another way to pay): cannot pay this provider")
        if self.wallet is None:
            raise PaymentRefused(
                NO_WALLET, f"a priced offer came for this job (provider {npub_of(fb.provider)} asks {fb.amount_msat} "
                           "msat) and no wallet configured to pay it",
                hint="pass --wallet URI to pay priced providers (or set PYLON_WALLET, or `pylon config set wallet URI`; "
                     "wallet= in code); --max-msat / max_msat caps what one ask may pay")
        held = state.held_msat
        if held is not None and fb.amount_msat > held and state.request.bid_msat == held and held < self.max_msat:
            raise InvoiceRefused(ABOVE_BUDGET, f"provider {npub_of(fb.provider)} asks {fb.amount_msat} msat, above what "
                                               f"is left of the session budget ({held} msat)", hint=SESSION_HINT)
        await self._pay(state, fb)

    async def _pay(self, state: _JobState, fb: JobFeedback) -> None:
        assert self.payments is not None
        receipt = await self.payments.on_payment_required(
            state.payment, job_id=state.job_id, provider=fb.provider, amount_msat=fb.amount_msat,
            bolt11=fb.bolt11, bid_msat=state.bid_msat)
        if receipt is None:
            return  # a repeat, or another provider's quote after we paid: ignored (recorded in quotes)
        state.paid_msat, state.fee_msat = receipt.amount_msat, receipt.fee_msat
        state.worked.add(fb.provider)  # the paid provider is the one at work on it
        self.spent_msat += receipt.amount_msat + receipt.fee_msat
        state.mark("paid")
        state.progress("payment", f"paid {receipt.amount_msat} msat (fee {receipt.fee_msat}) to "
                       f"{npub_of(fb.provider)}, hash {receipt.payment_hash[:16]}…", provider=fb.provider,
                       amount_msat=receipt.amount_msat)
        if fb.provider in state.sealed:
            await self._open_paid(state, fb.provider, receipt.preimage)

    # -------------------------------------------------------------------- pay for the key
    async def _on_sealed_result(self, state: _JobState, event: Event) -> None:
        """A sealed result (pylon.jobs.keyed) is a quote whose goods are already delivered."""
        if state.winner is not None or event.pubkey in state.sealed:
            return
        if state.payment.paid and event.pubkey != state.payment.provider:
            return
        try:
            result = parse_sealed_result(event)
        except JobParseError as exc:
            log.info("unusable sealed result from %s: %s", event.pubkey[:12], exc)
            return
        if result.request_id != state.job_id or result.customer != self.pubkey:
            return
        state.sealed[event.pubkey] = result
        state.finished.add(event.pubkey)
        fb = JobFeedback("payment-required", state.job_id, self.pubkey, event.pubkey, "pay for the key", "",
                         result.amount_msat, result.bolt11, None, result.encrypted, event.created_at, event)
        refusal: InvoiceRefused | None = None
        try:
            if not fb.bolt11 or decode_bolt11(fb.bolt11).payment_hash.lower() != delivery_hash(event):
                refusal = InvoiceRefused(MALFORMED, f"provider {npub_of(event.pubkey)}'s sealed result names a key hash "
                                                    "its invoice does not have: paying would not open it")
        except InvoiceInvalid as exc:
            refusal = InvoiceRefused(MALFORMED, f"sealed result's invoice does not decode: {exc}")
        if refusal is not None:
            await self._refused(state, refusal, event.pubkey)
            return
        if state.payment.paid:  # paid already (this provider's sealed result is its answer)
            state.mark("quoted")
            state.progress("quoted", "pay for the key", provider=fb.provider, amount_msat=fb.amount_msat)
            await self._open_paid(state, event.pubkey, state.payment.receipt.preimage if state.payment.receipt else None)
            return
        await self._quoted(state, fb, "pay for the key")  # the same payment step as payment-required

    async def _open_paid(self, state: _JobState, provider: str, preimage: str | None) -> None:
        """Paying revealed the key: open the sealed result, or publish the fraud proof."""
        sealed = state.sealed[provider]
        assert sealed.event is not None
        try:
            if not preimage:
                raise SealError("the wallet returned no preimage")
            result = open_sealed_result(sealed.event, preimage, self.keys)
        except SealError as exc:
            report = build_fraud_report(self.keys, FraudProof(sealed.event, sealed.bolt11 or "", preimage or ""),
                                        state.job_id)
            with contextlib.suppress(Exception):
                await self.pool.publish(report)  # type: ignore[union-attr]
            state.fraud_report = report
            raise self._paid_no_result(state, f"that opens: {exc}; fraud report {report.id} published (kind 1985)")
        state.winner = result
        state.delivery = KEY_MODE
        state.mark("result")
        if state.on_delta is not None and result.text:
            state.streamed += result.text
            state.on_delta(result.text)
        state.progress("done", provider=provider)
        self._note_result(state, sealed.event, None)

    def _above_bid(self, state: _JobState, fb: JobFeedback) -> InvoiceRefused | None:
        """An `error` naming a price above our bid tag, as the refusal that names the limit."""
        bid = state.request.bid_msat
        if fb.amount_msat is None or bid is None or fb.amount_msat <= bid:
            return None
        capped = state.bid_msat is None or state.bid_msat > bid  # the cap, not the caller's bid, set the tag
        reason, limit = (ABOVE_MAX, "per-job cap") if capped else (ABOVE_BID, "bid")
        hint = None
        if state.held_msat is not None and bid == state.held_msat and bid < self.max_msat:
            reason, limit = ABOVE_BUDGET, "session budget left"  # Budget.hold lowered the bid to what is left
            hint = SESSION_HINT  # not the daily budget's (ABOVE_BUDGET's usual hint)
        said = f" (it says: {fb.extra})" if fb.extra else ""
        return InvoiceRefused(reason, f"provider {npub_of(fb.provider)} asks {fb.amount_msat} msat, above the {limit} "
                                      f"of {bid} msat{said}", hint=hint)

    async def _refund(self, state: _JobState, fb: JobFeedback) -> None:
        """The paid provider failed and offers the money back (`["refund", msat]`): ask for it
        (pylon.customer.refunds; docs/PROTOCOL.md, "Refunds"). Bounded; never raises."""
        if fb.event is None or refund_offer(fb.event) is None:
            return
        await self._refund_offered(state)

    async def _refund_offered(self, state: _JobState) -> None:
        r = state.payment.receipt
        if r is None or self.payments is None:
            return
        try:
            state.payment.receipt = await request_refund(self.payments.ledger, self.payments.wallet, self.keys,
                                                         self.pool, r)
        except Exception as exc:  # the receipt stays paid and 'requested'/unrefunded: a later start retries
            log.warning("refund for job %s not obtained: %s: %s", state.job_id[:12], type(exc).__name__, exc)

    # -------------------------------------------------------------------- offers (untargeted jobs)
    def _offer_quote(self, state: _JobState, fb: JobFeedback) -> None:
        """A paid quote on an untargeted job: kept until the decision window closes."""
        now = time.monotonic()
        book = state.book
        offer = book.add(Offer(fb.provider, "quote", fb.amount_msat, state.elapsed(), payload=fb))
        book.quoted.add(fb.provider)
        book.free_working.discard(fb.provider)
        if state.payment.paid:
            offer.action, offer.reason = "left", f"provider {npub_of(state.payment.provider or '')} was already paid for this job"
            state.payment.quotes.append(Quote(fb.provider, fb.amount_msat, action="ignored", reason=offer.reason))
            return
        if book.first_quote_s is None:
            book.first_quote_s = now
        if self._everyone_answered(state):
            state.decide_at = now  # nobody left to wait for: decide at once (pylon.customer.offers)
        elif state.decide_at is None:
            state.decide_at = max(now, book.first_quote_s + state.window_s)

    def _everyone_answered(self, state: _JobState) -> bool:
        """True when every live provider serving the job's model (pylon.customer.live, as last
        seen; never waited for) has answered this job or is avoided: the decision window would
        only wait for a provider that does not announce. False when who is live is unknown or
        nobody announces (then the window is all there is to go by)."""
        live = self._live.known(state.request.model) if self._live is not None else None
        return live is not None and bool(live) and all(
            p.pubkey in state.responders or p.pubkey in state.avoid for p in live)

    def _note_free_work(self, state: _JobState, provider: str) -> None:
        """`processing`/`partial` from a provider that asked for nothing: a free offer at work."""
        book = state.book
        if provider in book.quoted or provider == state.payment.provider or provider in book.free_working:
            return
        book.free_working.add(provider)
        book.add(Offer(provider, "free", 0, state.elapsed(), action="pending", reason="free provider processing"))

    def _note_failure(self, state: _JobState, provider: str, reason: str) -> None:
        """A provider said `error`: a free one no longer blocks the quotes, which are decided now."""
        book = state.book
        for o in book.offers:
            if o.provider == provider and o.action == "pending":
                o.action, o.reason = "left", f"it reported an error: {reason}"[:300]
        if provider in book.free_working:
            book.free_working.discard(provider)
            if not state.payment.paid and book.pending_quotes() and state.decide_at is None:
                state.decide_at = time.monotonic()

    def _note_result(self, state: _JobState, event: Event, winner_before: JobResult | None) -> None:
        won = winner_before is None and state.winner is not None and state.winner.event is event
        amount = state.winner.amount_msat if won and state.winner is not None else None
        for o in state.book.offers:
            if o.provider == event.pubkey and o.action == "pending":
                o.action, o.reason = ("taken", "its result came first") if won else ("left", "another result won")
        if not any(o.provider == event.pubkey and o.action == "taken" for o in state.book.offers):
            state.book.add(Offer(event.pubkey, "result", amount, state.elapsed(), action="taken" if won else "left",
                                 reason="first valid result" if won else "another result won or it was not paid"))
        if won:
            state.book.free_working.discard(event.pubkey)
            paid_to = state.payment.provider
            self._leave_quotes(state, f"provider {npub_of(paid_to)} was paid and answered" if paid_to
                               else "a free result came first: nothing paid")

    async def _decide(self, state: _JobState) -> None:
        """The decision window closed: a free provider at work wins; else pay the best quote."""
        state.decide_at = None
        book = state.book
        if state.payment.paid or state.winner is not None or not book.pending_quotes():
            return
        if book.free_working:
            for o in book.pending_quotes():
                o.reason = "waiting: a free provider is processing the job"
            return
        scores = self.scoreboard.scores() if self.scoreboard is not None else {}
        ranked = rank(book.pending_quotes(), state.route, scores)
        for i, offer in enumerate(ranked):
            fb = offer.payload
            try:
                await self._on_payment_required(state, fb)
            except PaymentError as exc:
                offer.action, offer.reason = "left", str(exc)[:300]
                state.progress("error", str(exc), provider=fb.provider)
                state.refusals.append(exc)
                state.finished.add(fb.provider)
                if isinstance(exc, PaymentRefused):
                    continue  # refused by our checks, nothing paid: the next quote may pass
                return  # the wallet failed (its outcome may be unknown): never try a second payment
            if state.payment.paid:
                s = scores.get(fb.provider)
                offer.action = "taken"
                offer.reason = (f"route {state.route}: {offer.amount_msat} msat, score "
                                f"{s.score if s else ProviderScore('').score}"
                                + (f", {len(ranked) - 1} other quote(s)" if len(ranked) > 1 else ""))
                self._leave_quotes(state, f"route {state.route} preferred provider {npub_of(fb.provider)}")
            return

    # -------------------------------------------------------------------- stalls and failover
    @staticmethod
    def _stall_at(state: _JobState) -> float | None:
        """When the providers working for us (a free one at work, the targeted one) count as stalled."""
        if state.stall_s is None or state.winner is not None or state.payment.paid:
            return None  # after a payment the job is not re-offered (never two payments for one answer)
        watched = set(state.book.free_working)
        if (state.target is not None and state.target not in state.finished
                and (state.target in state.last_seen or state.watch_silent)):
            watched.add(state.target)  # silent since the request (watch_silent) or since its last word
        if not watched:
            return None
        return max(state.last_seen.get(p, state.started) for p in watched) + state.stall_s

    async def _on_stall(self, state: _JobState) -> None:
        """The provider(s) at work went silent: pay a pending quote if there is one, else give up
        this attempt (JobStalled) so it can be re-offered. With no relay connected, the silence
        is ours, not theirs: RelayError, and no provider is marked stalled (score, review)."""
        if self.pool is not None and self.pool.connected_count() == 0:
            reasons = self.pool.why_down() or "disconnected"
            raise RelayError(f"job {state.job_id[:12]}…: no relay is connected, so no answer could arrive ({reasons})",
                             hint="is the relay still running? the job may still be answered: `pylon result "
                                  f"{state.job_id}` fetches it once a relay is back")
        stalled = set(state.book.free_working)
        if state.target is not None:
            stalled.add(state.target)
        state.stalled |= stalled
        for o in state.book.offers:
            if o.provider in stalled and o.action == "pending" and o.kind == "free":
                o.action, o.reason = "left", f"stalled: silent for {state.stall_s:g}s"
        state.book.free_working -= stalled
        state.progress("error", f"stalled: no word for {state.stall_s:g}s", provider=next(iter(stalled), None))
        if state.book.pending_quotes():
            state.decide_at = time.monotonic()
            return
        raise JobStalled(f"job {state.job_id[:12]}…: provider(s) {', '.join(npub_of(p) for p in sorted(stalled))} went "
                         f"silent for {state.stall_s:g}s", sorted(stalled), state.job_id)

    async def _grace(self, state: _JobState, grace_deadline: float | None, error_grace_s: float) -> float | None:
        """When this attempt ends for want of anyone to answer, after an error or a refused quote:
        None while somebody may still answer it.

        While a provider is at work (or a quote is pending) nothing ends it: an `error` from
        another provider (one that declined it, or a stranger) is only noted, and that provider
        leaves the candidates. Once everyone who answered has finished: at once for a targeted
        job or when no other live provider could take it (pylon.customer.live); after
        `error_grace_s` when a provider that was at work failed (then the job may be re-sent:
        failover); and when the answers were only declines or refused quotes, never while live
        providers that have not answered remain: they got the request too, and re-sending it
        would make one of them run it twice."""
        if state.winner is not None:
            return grace_deadline
        if not (state.errors or state.refusals) or not state.responders <= state.finished:
            return None  # nothing failed, or someone is still at it
        if grace_deadline is not None:
            return grace_deadline
        now = time.monotonic()
        if state.target is not None:
            return now  # a targeted job has no one else to wait for
        others = await self._live.others(state.request.model, state.responders | state.avoid) \
            if self._live is not None else None  # None: unknown
        if others is not None and not others:
            return now  # evidently nobody else
        if others and not state.worked & state.errors.keys():
            return None  # only declines or refusals so far: wait for the live providers that have the request
        return now + error_grace_s

    async def _check_target(self, state: _JobState) -> None:
        """The live view is back: a targeted provider known gone (withdrawn or expired
        announcement) that has not answered ends the job at once (ProviderUnavailable)."""
        target = state.target
        if target is None:
            await self._check_all_avoided(state)
            return
        if self._live is None or target in state.responders or state.winner is not None:
            return
        why = self._live.gone(target)
        if why is None:
            return  # live, or unknown (never announced): keep waiting
        if self._view_too_old(state):  # it may have come back since
            return
        # a provider that withdrew but is still online (paused, draining, its backend down) says
        # why in a moment, which tells the user more than "withdrew": wait that moment first
        now = time.monotonic()
        if state.gone_seen_at is None:
            state.gone_seen_at = now
        if now - state.gone_seen_at < GONE_REPLY_GRACE_S:
            inbox = self._routes.get(state.job_id)
            if inbox is not None:
                asyncio.get_running_loop().call_later(GONE_REPLY_GRACE_S, inbox.offer, _LIVE_VIEW)
            return
        msg = (f"provider {npub_of(target)} {why}: it is not taking jobs; job {state.job_id[:12]}… was cancelled "
               "(kind 5 published)")
        state.progress("error", msg, provider=target)
        exc = ProviderUnavailable(msg, target, hint="`pylon providers` lists the live providers; ask without "
                                                    "--provider (provider= in code) to let any of them answer")
        setattr(exc, "job_id", state.job_id)
        raise exc

    def _view_too_old(self, state: _JobState) -> bool:
        """True when the live view is older than LIVE_RECHECK_S: it is read again, and the job
        looks again (`_LIVE_VIEW`) once it is back. A job ends on a recent view only."""
        assert self._live is not None
        if self._live.age() <= LIVE_RECHECK_S:
            return False
        self._live.refresh(max_age_s=LIVE_RECHECK_S)
        inbox = self._routes.get(state.job_id)
        if inbox is not None:
            self._live.when_known(lambda: inbox.offer(_LIVE_VIEW))
        return True

    async def _check_all_avoided(self, state: _JobState) -> None:
        """An untargeted first ask whose avoid list covers every live provider serving the model
        (they ignore the job: NIP-90 `pylon-avoid`) ends at once rather than at its timeout. An
        unknown or empty view keeps waiting: a provider that does not announce may still answer."""
        if self._live is None or state.responders or state.winner is not None:
            return
        live = self._live.known(state.request.model)
        if not live or any(p.pubkey not in state.avoid for p in live):
            return
        if self._view_too_old(state):  # one may have announced since
            return
        names = ", ".join(npub_of(p.pubkey) for p in live)
        msg = (f"every live provider serving {state.request.model or 'the model'} is avoided ({names}): nobody can "
               f"answer job {state.job_id[:12]}…; it was cancelled (kind 5 published)")
        state.progress("cancelled", msg)
        exc = NoProviderAnswered(msg, hint="drop one from --avoid or the `avoid` setting (`pylon config unset avoid` "
                                           "clears it), or ask again when another provider is live")
        setattr(exc, "job_id", state.job_id)
        raise exc

    async def _next_provider(self, model: str | None, excluded: Sequence[str], max_tokens: int | None) -> str | None:
        """For a targeted job that failed: the live provider to re-send it to, encrypted (NIP-44),
        best score first, then cheapest; None when there is none (or who is live is unknown)."""
        if self._live is None:
            return None
        others = await self._live.others(model, [*excluded, *self.avoid])
        candidates = [p for p in others or [] if p.supports_nip44]
        if not candidates:
            return None
        scores = self.scoreboard.scores() if self.scoreboard is not None else {}

        def key(p: Any) -> tuple[float, int, str]:
            s = scores.get(p.pubkey)
            return (-(s.score if s is not None else ProviderScore("").score), p.quote_msat(max_tokens), p.pubkey)
        return min(candidates, key=key).pubkey

    async def _run_with_failover(self, prompt: str | list[dict], params: dict[str, Any], *, provider: str | None,
                                 timeout: float, failover: bool | None = None, **kwargs: Any) -> AskOutcome:
        """A job whose provider errors or stalls (nothing paid) is asked again, as a new request
        that avoids the providers that failed (and tells them so: pylon.jobs.nip90 AVOID_TAG),
        within the same timeout and budget.

        Untargeted jobs fail over by default, targeted ones only with `failover=True`: the user
        chose that provider, and a targeted prompt is encrypted to it. So a targeted job is
        re-sent encrypted to another live provider (pylon.customer.live), never in clear; one
        sent in clear (`encrypted=False`) is re-sent untargeted. No failover when evidently
        nobody else is there (no other live provider): the failure is reported at once."""
        allowed = (provider is None) if failover is None else failover
        if not allowed or self.failover == 0:
            return await self._run_job(prompt, params, provider=provider, timeout=timeout, **kwargs)
        avoid = list(kwargs.pop("avoid", ()) or ())
        encrypted = kwargs.pop("encrypted", None)
        target = normalize_pubkey(provider) if provider else None
        sealed = target is not None and encrypted is not False  # the prompt is for one provider's eyes only
        model = params.get("model")
        deadline = time.monotonic() + timeout
        history: list[dict[str, Any]] = []
        first_error: JobError | None = None
        for attempt in range(self.failover + 1):
            try:
                outcome = await self._run_job(prompt, params, provider=target, timeout=deadline - time.monotonic(),
                                              encrypted=encrypted,  # a re-send is never less private
                                              avoid=avoid, first_reply_s=FAILOVER_FIRST_REPLY_S if attempt else None,
                                              watch_silent=target is not None, **kwargs)
            except (ProviderError, JobStalled, ProviderUnavailable) as exc:
                if isinstance(exc, ProviderUnavailable) and first_error is not None:
                    raise first_error from None
                first_error = first_error or exc
                # only the provider(s) at work on it (or chosen) failed it; one that declined is no
                # reason to re-send the job to the others, who have it already
                failed = (list(exc.providers) if isinstance(exc, JobStalled) else
                          [exc.provider] if isinstance(exc, ProviderUnavailable) else list(exc.failed))
                left = deadline - time.monotonic()
                if attempt == self.failover or left < 1.0 or not failed or (kwargs.get("on_delta") and history):
                    raise
                declined = list(exc.errors) if isinstance(exc, ProviderError) else []
                avoid += [p for p in [*failed, *declined] if p not in avoid]
                if sealed:
                    target = await self._next_provider(model, avoid, params.get("max_tokens"))
                    if target is None:
                        raise  # no other live provider to encrypt it to: never re-sent in clear
                else:
                    target = None
                    if self._live is not None and await self._live.others(model, [*avoid, *self.avoid]) == []:
                        raise  # evidently nobody else (no other live provider): no re-send, no wait
                history.append({"job_id": getattr(exc, "job_id", ""), "providers": failed,
                                "reason": ("stalled" if isinstance(exc, JobStalled) else
                                           "unavailable" if isinstance(exc, ProviderUnavailable) else "error"),
                                "detail": str(exc),
                                "resent_to": target or "any provider", "paid_msat": 0})
                log.info("failover: asking %s without %s (%.1fs left)", (target or "anyone")[:12],
                         ", ".join(p[:12] for p in failed), left)
                continue
            except NoProviderAnswered:
                if first_error is None:
                    raise
                raise first_error from None  # nobody else is there: the original failure is the answer
            except PaymentRefused as exc:
                if not isinstance(first_error, ProviderError):
                    raise
                # the re-send found only an offer we would not pay: the failure that started it is
                # the answer, and what the offer needed (a wallet, a higher cap) is the hint
                message, hint = exc.parts()
                raise ProviderError(f"{first_error.parts()[0]}; re-sent, it got only an offer it did not pay: {message}",
                                    first_error.errors, failed=first_error.failed, hint=hint or None) from None
            outcome.failover = history
            return outcome
        raise AssertionError("unreachable")

    @staticmethod
    def _leave_quotes(state: _JobState, reason: str) -> None:
        for o in state.book.leave_pending(reason):
            state.payment.quotes.append(Quote(o.provider, o.amount_msat, action="ignored", reason=reason))

    def _publish_reviews(self, state: _JobState) -> None:
        """One signed review per provider that took part (best effort, in the background)."""
        from pylon.customer.reviews import build_review

        reviews = []
        win = state.winner
        if win is not None and win.event is not None:
            reviews.append(build_review(self.keys, win.provider, "delivered", job_id=state.job_id,
                                        result_id=win.event.id, details={"paid_msat": state.paid_msat,
                                                                         "first_reply_s": state.first_seen.get(win.provider)}))
        paid_to = state.payment.provider
        if paid_to is not None and state.gave_up and (win is None or win.provider != paid_to):
            report = state.fraud_report
            reviews.append(build_review(self.keys, paid_to, "paid_not_delivered", job_id=state.job_id,
                                        fraud_report_id=report.id if report is not None else None,
                                        details={"paid_msat": state.paid_msat}))
        reviews += [build_review(self.keys, p, "failed", job_id=state.job_id) for p in self._failed(state)]
        reviews += [build_review(self.keys, p, "stalled", job_id=state.job_id) for p in state.stalled]
        for review in reviews:
            if self.pool is None:
                return
            task = asyncio.create_task(self.pool.publish(review))
            self._review_tasks.add(task)
            task.add_done_callback(self._review_done)

    def _review_done(self, task: asyncio.Task) -> None:
        self._review_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: a review is best effort
            log.info("review not accepted: %s", task.exception())

    def _failed(self, state: _JobState) -> list[str]:
        """The providers whose errors count against them: not the paid one (scored as
        paid_not_delivered), not one asked for a model it never announced."""
        paid_to = state.payment.provider
        return [p for p in state.errors if p != paid_to and not self._announced_without(p, state.request.model)]

    def _announced_without(self, provider: str, model: str | None) -> bool:
        """Does the live view (NIP-89, already read) show `provider` announcing models, not
        `model` among them? Then its error is about what the customer asked (`pylon ask --model
        typo`), and neither scores it nor reviews it publicly as a failure. Unknown: False."""
        live = self._live.known(None) if self._live is not None else None
        info = next((p for p in live or () if p.pubkey == provider), None)
        return info is not None and not info.serves(model)

    def _score_job(self, state: _JobState) -> None:
        """What this job says about the providers in it (pylon.customer.scoreboard)."""
        board = self.scoreboard
        if board is None:
            return
        try:
            win = state.winner
            if win is not None:
                t_result = state.timings.get("result")
                # a quick job may say no `processing` (the provider's result says it all): from the request then
                t_work = (state.timings.get("processing") or state.timings.get("first_partial")
                          or state.timings.get("paid") or state.timings.get("published"))
                tps = None
                if win.completion_tokens and t_result is not None and t_work is not None and t_result > t_work:
                    tps = win.completion_tokens / (t_result - t_work)
                board.record(state.job_id, win.provider, "delivered", first_reply_s=state.first_seen.get(win.provider),
                             tokens=win.completion_tokens, tokens_per_s=tps, paid_msat=state.paid_msat)
            paid_to = state.payment.provider
            if paid_to is not None and (win is None or win.provider != paid_to) and state.gave_up:
                board.record(state.job_id, paid_to, "paid_not_delivered", first_reply_s=state.first_seen.get(paid_to),
                             paid_msat=state.paid_msat)
            for provider in state.stalled:
                board.record(state.job_id, provider, "stalled", first_reply_s=state.first_seen.get(provider))
            failed = self._failed(state)
            for provider, reason in state.errors.items():
                if provider in failed:
                    board.record(state.job_id, provider, "failed", first_reply_s=state.first_seen.get(provider),
                                 detail=reason)
        except Exception:  # reputation is advisory: never fail a job over it
            log.exception("could not record provider scores for job %s", state.job_id[:12])

    def _paid_no_result(self, state: _JobState, detail: str) -> PaidNoResult:
        state.gave_up = True
        r = state.payment.receipt
        amount = r.amount_msat if r is not None else state.paid_msat
        if r is not None and r.refund_status == "refunded":
            msg = (f"provider {npub_of(state.payment.provider or '')} could not run job {state.job_id[:12]}…{detail}; "
                   f"the {r.refund_msat} msat paid were refunded (receipt {r.id})")
            state.progress("error", msg, provider=state.payment.provider)
            return PaidNoResult(msg, r)
        msg = (f"paid {amount} msat to provider {npub_of(state.payment.provider or '')} for job {state.job_id[:12]}… "
               f"but no result came {detail}".rstrip()
               + (f" (receipt {r.id}, payment hash {r.payment_hash[:16]}…, kept: see `pylon receipts`)" if r else ""))
        state.progress("error", msg, provider=state.payment.provider)
        return PaidNoResult(msg, r)


# ------------------------------------------------------------------------------ streaming
_DONE = object()
# ask()'s keyword arguments and their defaults: stream() takes the same ones (one list, in ask's signature)
_ASK_DEFAULTS: dict[str, Any] = {name: p.default for name, p in inspect.signature(PylonClient.ask).parameters.items()
                                 if p.kind is inspect.Parameter.KEYWORD_ONLY}


class JobStream:
    """Async iterator of answer text as `partial` feedback arrives; `.outcome` afterwards.

    Leaving early (`break`, `aclose()`) cancels the job and publishes a kind-5 cancellation.
    """

    def __init__(self, client: PylonClient, prompt: str | list[dict], kwargs: dict[str, Any]) -> None:
        self._client = client
        self._prompt = prompt
        self._kwargs = kwargs
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.outcome: AskOutcome | None = None

    def _start(self) -> None:
        unknown = [k for k in self._kwargs if k not in _ASK_DEFAULTS]
        if unknown:
            raise TypeError(f"unexpected arguments for stream(): {', '.join(unknown)}")
        coro = self._client._ask(self._prompt, {**_ASK_DEFAULTS, **self._kwargs}, on_delta=self._queue.put_nowait)
        self._task = asyncio.create_task(coro)
        self._task.add_done_callback(lambda _t: self._queue.put_nowait(_DONE))

    def __aiter__(self) -> "JobStream":
        return self

    async def __anext__(self) -> str:
        if self._task is None:
            self._start()
        item = await self._queue.get()
        if item is _DONE:
            self._queue.put_nowait(_DONE)
            assert self._task is not None
            self.outcome = self._task.result()  # raises the job's error, if any
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> "JobStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening; a job still running is cancelled (kind 5 published)."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(JobCancelled, asyncio.CancelledError):
            await task

    async def text(self) -> str:
        """Consume the stream and return the whole answer."""
        async for _ in self:
            pass
        assert self.outcome is not None
        return self.outcome.text
