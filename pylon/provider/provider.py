"""The provider (journey 2): serve NIP-90 kind-5050 jobs from an OpenAI-compatible backend.

What happens to one request, in order (each step recorded in the job store first):

    seen -> quoted -> _collect_payment() -> processing -> done | error | cancelled

* Intake is synchronous and cheap (routing by `p` tag, parsing, model check, one SQLite
  insert-or-ignore); each accepted job then runs as its own task. Jobs wait on one
  `asyncio.Semaphore(concurrency)` only around the backend call, so up to `concurrency`
  generations run at once and vLLM's continuous batching is used; nothing serialises jobs.
* Streaming: the first backend delta becomes `partial` feedback at once, later ones are
  coalesced for `partial_interval_s` (or up to `partial_max_chars`; pylon.provider.partials)
  (content = the text since the previous partial, `["offset", n]` = where it starts in the
  answer; see pylon.jobs.nip90). The result (kind 6050) carries the whole text, usage, amount
  and the backend's finish reason.
* The result event is signed and stored before it is published and marked published after a
  relay accepted it, so a restart republishes the same event rather than running the job
  again; a job that was mid-generation when the provider died is run again once.
* `_collect_payment(job)` is the payment step between `quoted` and `processing`: a no-op for
  free jobs; priced jobs go through pylon.provider.payments.PaymentCollector
  (invoice -> awaiting_payment -> payment-required -> wait for settlement -> paid), which
  also resumes `awaiting_payment` / `paid` jobs after a restart.
* The backend's health is probed periodically; a failing backend turns jobs into `error`
  feedback while the provider keeps running, and the served model list follows the backend
  unless models were named explicitly.
* A kind-5 deletion from the customer cancels that job (the running task is cancelled).
* A NIP-89 announcement goes out on start and every `announce_interval_s` while the backend
  is healthy, with a NIP-40 expiration `announce_ttl_s` ahead (3 intervals by default), so a
  provider that stops vanishes from relays by itself. When the backend goes down the
  announcement is withdrawn (NIP-09 deletion of its address) and a warning says so; it is
  published again as soon as the backend is back (issue 10, liveness).

Logging: one INFO line per job state change: job id, customer, model, tokens, msats, seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

from pydantic import ValidationError

from pylon.provider.backends import BackendHealth, BackendUnavailable, ChatChunk, ChatRequest, OpenAIBackend
from pylon.errors import BackendError, RelayError
from pylon.provider.access import CustomerAccess
from pylon.provider.admission import Admission
from pylon.provider.delivery import until_accepted
from pylon.provider.drain import refuse_closed
from pylon.provider.identity import live_relays
from pylon.provider.keysale import KeySales, key_invoice_kind
from pylon.provider.jobstore import LIVE, JobStore
from pylon.provider.partials import DEFAULT_INTERVAL_S as DEFAULT_PARTIAL_INTERVAL_S
from pylon.provider.partials import DEFAULT_MAX_CHARS as DEFAULT_PARTIAL_MAX_CHARS
from pylon.provider.partials import PartialCoalescer
from pylon.provider.context import (
    fit_max_tokens, no_room_reason, prompt_tokens_upper_bound, wanted_max_tokens,
)
from pylon.jobs.keyed import DELIVERY_TAG, KEY_MODE, key_hash, new_key, seal, wants_key
from pylon.jobs.nip89 import build_announcement, build_withdrawal
from pylon.jobs.nip90 import (
    KIND_DELETION, KIND_REQUEST, KIND_RESULT, FeedbackStatus, JobFeedback, JobParseError, JobRequest, JobResult, avoids,
    parse_cancellation,
)
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.jobs.pricing import invoice_unit_msat, quote_msat
from pylon.provider.job import Job
from pylon.provider.payments import PaymentCollector, PaymentSeams
from pylon.provider.reporting import ProviderMetricsSink
from pylon.relay.pool import RelayPool
from pylon.jobs.refund import KIND_REFUND_REQUEST, REFUND_TAG
from wallet.base import Invoice, InvoiceState, Wallet
from wallet.waiting import wait_for_invoice
from pylon.provider.refunds import RefundDesk, job_deadline
from pylon.provider.answered import OLD_AFTER_S, AnsweredCheck

#: how far before its start a provider looks for requests it has not seen (and how far a
#: request's created_at may be from the provider's clock, either way, to be taken)
LOOKBACK_S = 900
INTAKE_SKEW_S = 900
#: a paid job whose request has no NIP-40 expiration is retried on backend failures this long
PAID_JOB_DEADLINE_S = 120.0


log = logging.getLogger("pylon.provider")

# logged at DEBUG (see Provider._log): the steps every job (or every priced job: the quote) takes
_ROUTINE_STEPS = frozenset({"seen", "quoted", "payment-required", "processing"})
DELIVERY_GRACE_S = 2.0  # on stop, how long results already published may wait for a relay's OK
UNHEALTHY_PROBE_S = 2.0  # how often a backend that is down is probed again
PROBE_ON_INTAKE_S = 5.0  # a job arriving while the backend is down waits this long for a fresh probe
# a job still running this long after its claim says `processing`; well inside a customer's
# 300 ms decision window, where a free provider at work beats a paid quote (pylon.customer.offers)
PROCESSING_NOTICE_S = 0.1
HEARTBEAT_S = 10.0  # a job sending no partials (not streamed, or key mode) sends a `processing` this often
_CANCEL_MEMORY = 4096  # cancellations seen before their request arrived


def _take_summary(job: "Job", chunk: ChatChunk) -> None:
    """What a backend's final chunk (or whole answer) says about the job besides its text."""
    if chunk.finish_reason:
        job.finish_reason = chunk.finish_reason
    if chunk.tool_calls:
        job.tool_calls = chunk.tool_calls
    if chunk.usage is not None:
        job.prompt_tokens, job.completion_tokens = chunk.usage


@dataclass(slots=True)
class ProviderStats:
    """Counters for tests, benches and `/health`: cheap ints, no locks needed in asyncio."""

    received: int = 0
    ignored: int = 0
    rejected: int = 0
    done: int = 0
    errors: int = 0
    cancelled: int = 0
    generations: int = 0  # backend calls started (a re-run after a crash counts again)
    backend_in_flight: int = 0
    max_backend_in_flight: int = 0


class Provider:
    """A kind-5050 service provider on an OpenAI-compatible backend.

    `async with provider.running():` starts it (relays connected, subscription open,
    announced); `await provider.run()` serves until cancelled.
    """

    def __init__(
        self,
        relays: Sequence[str],
        backend: OpenAIBackend,
        *,
        keys: Keys,
        models: list[str] | None = None,
        concurrency: int = 32,
        max_tokens_cap: int = 4096,
        price_msat: int = 0,
        price_per_1k_tokens_msat: int = 0,
        wallet: Wallet | None = None,
        free: bool | None = None,
        db_path: Path | None = None,
        pool: RelayPool | None = None,
        metrics: ProviderMetricsSink | None = None,
        name: str = "Pylon provider",
        partial_interval_s: float | None = DEFAULT_PARTIAL_INTERVAL_S,
        partial_max_chars: int = DEFAULT_PARTIAL_MAX_CHARS,
        announce_interval_s: float = 120.0,
        announce_ttl_s: float | None = None,
        health_interval_s: float = 15.0,
        since_margin_s: int = 60,
        max_pending: int | None = None,
        invoice_expiry_s: int = 600,
        tools: bool = False,
        paid_job_deadline_s: float = PAID_JOB_DEADLINE_S,
        lookback_s: int = LOOKBACK_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.relays = list(relays)
        self.backend = backend
        self.keys = keys
        self.models_explicit = bool(models)
        self.served_models: list[str] = list(models or [])
        self.concurrency = concurrency
        self.max_tokens_cap = max_tokens_cap
        self.price_msat = int(price_msat)
        self.price_per_1k_tokens_msat = int(price_per_1k_tokens_msat)
        self.model_prices: dict[str, tuple[int, int]] = {}  # model -> (per job, per 1k tokens): [[models]]
        self.wallet = wallet
        # free unless priced: a price given in code charges (free=True serves priced jobs free)
        self.free = (self.price_msat == 0 and self.price_per_1k_tokens_msat == 0) if free is None else bool(free)
        if not self.free and wallet is None:
            raise ValueError("a priced Provider needs wallet= to invoice with (or free=True to serve without charging)")
        self.db_path = db_path
        self.metrics = metrics
        self.name = name
        self.access: CustomerAccess | None = None  # [provider] allow/deny (pylon.provider.access)
        self.profile: dict[str, str] = {}  # about, picture, lud16 in the announcement (pylon.provider.identity)
        self.tools = tools  # announce tool support: the backend accepts OpenAI `tools`
        self.partial_interval_s = partial_interval_s  # None: no partials at all
        self.partial_max_chars = partial_max_chars
        self.announce_interval_s = announce_interval_s
        self.announce_ttl_s = announce_ttl_s if announce_ttl_s is not None else 3 * announce_interval_s
        self.announcing = False  # an unexpired announcement of ours is out (False while the backend is down)
        # created_at of our last announcement or withdrawal: the next one must be later, or a relay keeps
        # the old version (same-second replaceable tie) or applies the deletion to it (a reload, a resume)
        self._announced_at = 0
        self.accepting = True  # False while draining or paused: no new jobs, no announcement (pylon.provider.drain)
        self.closed_reason: str | None = None
        self.health_interval_s = health_interval_s
        self.since_margin_s = since_margin_s
        self.max_pending = max_pending or max(1024, 8 * concurrency)
        self.stats = ProviderStats()
        self.backend_health: BackendHealth | None = None
        self.context_lengths: dict[str, int] = {}  # model -> tokens, as the backend reports them
        self.pool: RelayPool | None = pool
        self._own_pool = pool is None
        self.store: JobStore | None = None
        self.admission = Admission(self.max_pending, concurrency)  # fair queue and slots (admission.py)
        self._jobs: dict[str, Job] = {}
        self._early_cancels: OrderedDict[str, str] = OrderedDict()
        self._answered: AnsweredCheck | None = None  # made per run (pylon.provider.answered)
        self._checking: set[str] = set()  # old requests waiting for that check
        self._looked_back_from = 0  # requests stamped before this (our start) may be answered already
        self._background: set[asyncio.Task] = set()
        self._check_health_now = asyncio.Event()
        self._probe: asyncio.Future[BackendHealth] | None = None  # the probe in flight, shared
        self._started = asyncio.Event()
        self.invoice_expiry_s = int(invoice_expiry_s)
        self.paid_job_deadline_s = float(paid_job_deadline_s)  # backend retries after payment stop here
        self.lookback_s = int(lookback_s)
        self.refunds: RefundDesk | None = None  # priced providers with a wallet (made per run)
        # pay for the key (pylon.provider.keysale): set per run when the wallet can sell a key
        # (invoices for a chosen preimage, or hold invoices); None: pay-first only
        self.key_sales: KeySales | None = None
        # priced jobs go through the payment step (pylon.provider.payments), made per run
        # once the job store is open
        self.payments: PaymentCollector | None = None
        # claim hook (`pylon serve --workers`, pylon.provider.workers): this process's worker id;
        # the job store then claims each job for one worker and resumes only this worker's jobs
        self.worker_id: str | None = None
        # False: leave this request to another worker for now (pylon.provider.workers.PreferredIntake)
        self.intake_gate: Callable[[Event], bool] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def pubkey(self) -> str:
        return self.keys.public_key

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        """Serve until cancelled."""
        async with self.running():
            await asyncio.Event().wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Provider"]:
        """Started, subscribed and announced inside the block; stopped on exit.

        Jobs still running on exit are cancelled and stay `processing` in the store: the
        next start runs them again (once).
        """
        tasks: list[asyncio.Task] = []
        try:
            if self.pool is None:
                self.pool = RelayPool(self.relays, keys=self.keys)
            if self._own_pool:
                await self.pool.__aenter__()
            await self.pool.wait_connected()
            self.store = JobStore(self.db_path, owner=self.worker_id)
            for customer in self.store.returning_customers():
                self.admission.served(customer)
            if not self.free:
                self.payments = PaymentCollector(
                    PaymentSeams(store=self.store, wallet=self.wallet, publish_feedback=self._publish_feedback,
                                 fail=self._fail, progress=self._payment_progress),
                    invoice_expiry_s=self.invoice_expiry_s)
            await self._probe_backend()
            recovered = self.store.recover()
            # paid-but-unserved and awaiting-payment jobs go back through the payment step
            recovered += self.store.jobs_in(("awaiting_payment", "paid"))
            if self.payments is not None and self.wallet is not None:
                self.refunds = RefundDesk(self.store, self.wallet, pubkey=self.pubkey)
                await self.refunds.resume()
                kind = await key_invoice_kind(self.wallet)  # before the announcement, which says so
                self.key_sales = KeySales(self.wallet, kind, self.store) if kind is not None else None
            # Start-up look-back: fresh or restarted, the provider considers requests from a
            # bounded window before its start (`lookback_s`), so jobs published while it was
            # down (or stamped by a customer whose clock is behind) are not missed; the store
            # dedupes what it already took, expired requests are dropped at intake.
            self._looked_back_from = int(time.time())
            since = self._looked_back_from - int(self.lookback_s)
            self._answered = AnsweredCheck(self.pool)
            sub = self.pool.subscribe([
                Filter.of(kinds=[KIND_REQUEST], since=since),
                Filter.of(kinds=[KIND_DELETION], p=[self.pubkey], since=since),
                Filter.of(kinds=[KIND_DELETION], k=[str(KIND_REQUEST)], since=since),
                Filter.of(kinds=[KIND_REFUND_REQUEST], p=[self.pubkey], since=since),
            ])
            await sub.open()
            for row in recovered:
                self._resume(row)
            if self.wallet is not None:  # delivered key-mode jobs whose key may still be bought; hold
                # invoices locked but not settled when we stopped (expired or not) are settled now
                held = self.key_sales.open_holds() if self.key_sales is not None else []
                for request_id, payment_hash, expires_at in self.store.unpaid_key_invoices() + held:
                    self._spawn(self._watch_key_payment_of(request_id, payment_hash, expires_at))
            tasks.append(asyncio.create_task(self._listen(sub), name="provider:listen"))
            with contextlib.suppress(asyncio.TimeoutError):
                await sub.wait_eose(10.0)
            await self.announce()
            tasks.append(asyncio.create_task(self._announce_loop(), name="provider:announce"))
            tasks.append(asyncio.create_task(self._health_loop(), name="provider:health"))
            # debug: `pylon serve` prints its own one "serving as" line; library users can turn this on
            log.debug("provider %s serving %s on %s (concurrency %d)", self.keys.npub,
                     ", ".join(self.served_models) or "(backend models unknown)", ", ".join(self.pool.urls),
                     self.concurrency)
            self._started.set()
            yield self
        finally:
            self._started.clear()
            for task in tasks:
                task.cancel()
            # results already stored and on their way (relays fan them out before their OK):
            # a moment for the OK, so a stop right after a delivery does not leave it to be
            # republished by the next start
            delivering = [j.task for j in self._jobs.values() if j.task is not None and not j.admitted]
            if delivering:
                await asyncio.wait(delivering, timeout=DELIVERY_GRACE_S)
            jobs = [j.task for j in self._jobs.values() if j.task is not None]
            for task in jobs:
                task.cancel()
            await asyncio.gather(*tasks, *jobs, return_exceptions=True)
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if self._answered is not None:
                await self._answered.close()
                self._answered = None
            self._checking.clear()
            if self._probe is not None:
                self._probe.cancel()
                await asyncio.gather(self._probe, return_exceptions=True)
                self._probe = None
            if self.pool is not None and self._own_pool:
                await self.pool.close()
                self.pool = None
            if self.store is not None:
                self.store.close()
                self.store = None
            self.payments = None
            self.key_sales = None

    # ------------------------------------------------------------------ announce / health
    async def announce(self) -> None:
        """Publish the NIP-89 announcement (models, prices, encryption, relays), expiring in
        `announce_ttl_s`; nothing while the backend is down (a provider that cannot serve is
        not advertised)."""
        assert self.pool is not None
        if not self.accepting:  # draining or paused: the announcement stays withdrawn
            return
        if self.backend_health is not None and not self.backend_health.ok:
            log.warning("not announcing: backend %s is down (%s)", self.backend.base_url, self.backend_health.error)
            return
        self._announced_at = max(int(time.time()), self._announced_at + 1)
        event = build_announcement(
            self.keys, expires_in_s=max(1, int(self.announce_ttl_s)), created_at=self._announced_at,
            models=self.served_models, name=self.name, profile=self.profile,
            price_msat=0 if self.free else self.price_msat,
            price_per_1k_tokens_msat=0 if self.free else self.price_per_1k_tokens_msat,
            relays=live_relays(self.pool), max_tokens=self._announced_max_tokens(),
            delivery=[KEY_MODE] if not self.free and self.key_sales is not None else [],
            context_lengths={m: n for m, n in self.context_lengths.items() if m in self.served_models},
            tools=self.tools,
        )
        try:
            await self.pool.publish(event)
            self.announcing = True
            log.info("announced (NIP-89) models=%s", ",".join(self.served_models))
        except RelayError as exc:
            log.warning("announcement not accepted: %s", exc)

    async def withdraw(self, reason: str) -> None:
        """Stop announcing: delete our announcement by its address (NIP-09) and say why."""
        assert self.pool is not None
        self.announcing = False
        self._announced_at = max(int(time.time()), self._announced_at)
        log.warning("stopped announcing (announcement withdrawn): %s", reason)
        try:
            await self.pool.publish(build_withdrawal(self.keys, reason=reason))
        except RelayError as exc:  # it still expires by itself (NIP-40)
            log.warning("withdrawal not accepted: %s", exc)

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.announce_interval_s)
            await self.announce()

    async def _probe_backend(self) -> BackendHealth:
        health = await self.backend.health()
        was_ok = self.backend_health.ok if self.backend_health is not None else None
        self.backend_health = health
        changed = False
        if health.ok and not self.models_explicit and health.models and health.models != self.served_models:
            self.served_models = list(health.models)
            changed = True
        if health.ok and health.context_lengths != self.context_lengths:
            self.context_lengths = dict(health.context_lengths)
            changed = True
        if changed and self._started.is_set():
            self._spawn(self.announce())
        if health.ok != was_ok:
            if health.ok:
                log.info("backend %s healthy (%s)", self.backend.base_url, ", ".join(health.models))
            else:
                log.warning("backend %s unhealthy: %s", self.backend.base_url, health.error)
            if self._started.is_set():  # liveness: announce only while the backend can serve
                self._spawn(self.announce() if health.ok else self.withdraw(f"backend down: {health.error}"))
        return health

    async def _health_loop(self) -> None:
        """Probe every `health_interval_s`; while the backend is down, every
        `UNHEALTHY_PROBE_S` at most, so a recovered backend is announced again within seconds."""
        while True:
            interval = self.health_interval_s
            if self.backend_health is not None and not self.backend_health.ok:
                interval = min(interval, UNHEALTHY_PROBE_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._check_health_now.wait(), interval)
            self._check_health_now.clear()
            try:
                await self._fresh_probe()
            except Exception:  # a probe must never take the provider down
                log.exception("backend health probe failed")

    # ------------------------------------------------------------------ intake
    async def _listen(self, sub: Any) -> None:
        async for event in sub:
            try:
                if event.kind == KIND_REQUEST:
                    self._on_request(event)
                elif event.kind == KIND_DELETION:
                    self._on_deletion(event)
                elif event.kind == KIND_REFUND_REQUEST and self.refunds is not None:
                    self._spawn(self.refunds.on_request(event))
            except Exception:  # one bad event never stops the loop
                log.exception("failed to handle event %s", event.id[:12])

    async def _take_if_unanswered(self, event: Event) -> None:
        """An old request is taken only when no relay holds a result for it (pylon.provider.answered)."""
        assert self._answered is not None
        try:
            if await self._answered.answered(event):
                self.stats.ignored += 1
                log.debug("request %s: answered before we saw it; not run again", event.id[:12])
                return
            self._on_request(event, checked=True)
        except Exception:  # one bad event never stops the provider
            log.exception("failed to handle event %s", event.id[:12])
        finally:
            self._checking.discard(event.id)

    def _on_request(self, event: Event, *, checked: bool = False) -> None:
        store = self.store
        assert store is not None
        targets = [t[1] for t in event.tags if len(t) >= 2 and t[0] == "p"]
        if targets and self.pubkey not in targets:
            self.stats.ignored += 1  # addressed to another provider
            return
        if avoids(event, self.pubkey):
            self.stats.ignored += 1  # the customer re-sent it without us (failover, --avoid): no reply, no run
            return
        if event.id in self._jobs:
            return
        if self.intake_gate is not None and not self.intake_gate(event):
            return  # another worker's to take first (pylon.provider.workers)
        if not self.accepting:  # draining or paused (pylon.provider.drain)
            refuse_closed(self, event, bool(targets))
            return
        expiration = event.expiration()
        now = time.time()
        if expiration is not None and expiration <= now:
            self.stats.ignored += 1
            return
        if abs(event.created_at - now) > INTAKE_SKEW_S:  # outside the intake window (docs/PROTOCOL.md)
            self.stats.ignored += 1
            return
        if not checked and self._answered is not None and (
                event.created_at < self._looked_back_from or now - event.created_at > OLD_AFTER_S):
            if event.id not in self._checking and store.status(event.id) is None:
                self._checking.add(event.id)  # from the look-back, or a late relay: answered already?
                self._spawn(self._take_if_unanswered(event))
            return
        try:
            req = JobRequest.from_event(event, self.keys)
        except JobParseError as exc:
            if store.record_seen(event.id, event.pubkey, event.created_at, event.to_json()):
                self.stats.rejected += 1
                store.transition(event.id, "error", error=str(exc))
                self._log(event.id, event.pubkey, None, "error", detail=str(exc))
                if targets or event.first_tag("i") is not None:
                    stub = JobRequest(messages=[], id=event.id, customer=event.pubkey)
                    self._feedback_soon(stub, "error", extra=f"invalid job request: {exc}")
            return
        new = store.record_seen(req.id, req.customer, req.created_at, event.to_json(),
                                model=req.model, encrypted=req.encrypted)
        if not new:
            return  # a duplicate (another relay, a resubscribe, a restart)
        self.stats.received += 1
        self._metric("received")
        if self._early_cancels.pop(req.id, None) == req.customer:
            store.transition(req.id, "cancelled")
            self._log(req.id, req.customer, req.model, "cancelled", detail="cancelled before it arrived")
            return
        health = self.backend_health
        if health is not None and not health.ok:  # the last probe failed: is it still down? (quote only
            self._spawn(self._admit_after_probe(req))  # what can be served now)
            return
        self._admit_model(req)

    def _admit_model(self, req: JobRequest) -> None:
        model = req.model or (self.served_models[0] if self.served_models else None)
        if model is None or model not in self.served_models:
            if not self.served_models:
                reason = "backend unavailable: no models to serve right now"
            else:
                reason = f"model {req.model!r} is not served here; served models: {', '.join(self.served_models)}"
            self._reject(req, reason)
            return
        self._admit(req, model)

    async def _admit_after_probe(self, req: JobRequest) -> None:
        """The backend was down at the last probe: probe it now (one probe shared by the jobs
        that arrive meanwhile) so a backend that came back serves at once rather than after
        the next periodic probe."""
        try:
            health = await asyncio.wait_for(self._fresh_probe(), PROBE_ON_INTAKE_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            health = BackendHealth(ok=False, error=str(exc) or type(exc).__name__)
        assert self.store is not None
        if self.store.status(req.id) != "seen":
            return  # cancelled meanwhile
        if not health.ok:
            self._reject(req, f"backend unavailable ({health.error or 'unhealthy'}); nothing was charged, "
                              "try again later or another provider")
        else:
            self._admit_model(req)

    def _fresh_probe(self) -> "asyncio.Future[BackendHealth]":
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_backend())
        return asyncio.shield(self._probe)

    def _admit(self, req: JobRequest, model: str) -> None:
        """Access list and fair queue, then the job runs (`_process`)."""
        refusal = (self.access.refuse(req.customer) if self.access is not None else None) \
            or self.admission.refuse(req.customer)
        if refusal is not None:
            self._reject(req, refusal)
            return
        # max_tokens as asked (capped); `_process` fits it to the model's context before quoting
        job = Job(request=req, model=model, max_tokens=wanted_max_tokens(req.max_tokens, self.max_tokens_cap))
        self._log(req.id, req.customer, model, "seen", detail="encrypted" if req.encrypted else "")
        self._start(job, self._process(job, fresh=True))

    def _reject(self, req: JobRequest, reason: str) -> None:
        assert self.store is not None
        self.stats.rejected += 1
        self.store.transition(req.id, "error", error=reason)
        self._log(req.id, req.customer, req.model, "error", detail=reason)
        self._metric("rejected")
        self._feedback_soon(req, "error", extra=reason)

    def _on_deletion(self, event: Event) -> None:
        store = self.store
        assert store is not None
        for rid in parse_cancellation(event):
            job = self._jobs.get(rid)
            if job is not None:
                if job.customer == event.pubkey and job.task is not None and not job.task.done():
                    job.cancelled_by_customer = True
                    job.task.cancel()
                continue
            row = store.get(rid)
            if row is None:
                self._early_cancels[rid] = event.pubkey
                while len(self._early_cancels) > _CANCEL_MEMORY:
                    self._early_cancels.popitem(last=False)
            elif row.customer == event.pubkey and row.status in LIVE and row.status != "processing":
                if store.transition(rid, "cancelled"):
                    self.stats.cancelled += 1
                    self._log(rid, row.customer, row.model, "cancelled")

    def _resume(self, row: Any) -> None:
        """Pick up a job the previous process left unfinished (see JobStore.recover)."""
        try:
            event = Event.from_json(row.request_json)
            req = JobRequest.from_event(event, self.keys)
        except Exception as exc:
            assert self.store is not None
            self.store.transition(row.request_id, "error", error=f"cannot resume: {exc}")
            return
        model = req.model or row.model or (self.served_models[0] if self.served_models else "")
        job = Job(request=req, model=model, max_tokens=self._capped_max_tokens(req, model), amount_msat=row.amount_msat or 0,
                  paid_at=row.paid_at)
        # priced, running and not paid: only a job paid for the key gets there (a job paid
        # first is paid before it runs). Its rerun must be sealed and invoiced again, never
        # delivered in the clear (that would give a priced answer away)
        job.key_delivery = row.status == "processing" and bool(job.amount_msat) and row.paid_at is None
        self._log(req.id, req.customer, model, "resumed", detail=f"was {row.status}")
        if job.key_delivery and self.key_sales is None and not row.result_json:
            self._fail(job, "this job was to be paid for its key, and this provider's wallet no longer sells keys; "
                            "nothing was charged, ask again")
            return
        if row.status == "processing":
            self._start(job, self._republish(job, row.result_json) if row.result_json else self._run(job, rerun=True))
        else:
            self._start(job, self._process(job))

    def _capped_max_tokens(self, req: JobRequest, model: str | None = None) -> int:
        """The job's max_tokens capped at `max_tokens_cap` (the cap itself when it names none)
        and, where the model's context length is known, to what an upper bound of the prompt
        leaves of it (at least 1: `_fit_context` refines it, or refuses the job, before quoting)."""
        wanted = wanted_max_tokens(req.max_tokens, self.max_tokens_cap)
        ctx = self.context_lengths.get(model) if model else None
        return max(1, fit_max_tokens(wanted, ctx, prompt_tokens_upper_bound(req.messages)))

    def _announced_max_tokens(self) -> int:
        """The most tokens a job can get: the cap, or less when every served model's context is smaller."""
        lengths = [self.context_lengths.get(m) for m in self.served_models]
        if lengths and all(lengths):
            return min(self.max_tokens_cap, max(n for n in lengths if n))
        return self.max_tokens_cap

    async def _fit_context(self, job: Job) -> bool:
        """Keep the job's prompt + max_tokens inside its model's context (pylon.provider.context).

        The prompt's upper bound decides the usual case without I/O; when it is too coarse the
        backend is asked for the exact count. False (after `error` feedback naming the sizes)
        when the prompt leaves no room for an answer."""
        ctx = self.context_lengths.get(job.model)
        wanted = wanted_max_tokens(job.request.max_tokens, self.max_tokens_cap)
        if ctx is None:
            job.max_tokens = wanted
            return True
        prompt = prompt_tokens_upper_bound(job.request.messages)
        exact = False
        if prompt + wanted > ctx:
            counted = await self.backend.count_prompt_tokens(job.model, job.request.messages)
            if counted is not None:
                prompt, exact = counted, True
        fitted = fit_max_tokens(wanted, ctx, prompt)
        if fitted < 1:
            self._fail(job, no_room_reason(job.model, ctx, prompt, exact))
            return False
        job.max_tokens = fitted
        return True

    def _start(self, job: Job, coro: Any) -> None:
        self._jobs[job.id] = job
        job.task = asyncio.create_task(coro, name=f"job:{job.id[:12]}")
        rid = job.id
        self.admission.admit(job.customer)
        job.admitted = True

        def _done(_task: asyncio.Task[Any]) -> None:
            self._jobs.pop(rid, None)
            self._release(job)

        job.task.add_done_callback(_done)

    def _release(self, job: Job) -> None:
        """The job no longer counts against its customer's queue: it ended, or its result is
        stored and on its way (relays fan a result out before they acknowledge it, so the
        customer's next job can arrive before our OK does)."""
        if job.admitted:
            job.admitted = False
            self.admission.release(job.customer)

    # ------------------------------------------------------------------ the job
    def quote(self, job: Job) -> int:
        """The price of `job` in msat: per request plus per 1k tokens of its (capped) max_tokens
        (see pylon.jobs.pricing for the rule and the whole-sat rounding)."""
        if self.free:
            return 0
        price, per_1k = self.model_prices.get(job.model, (self.price_msat, self.price_per_1k_tokens_msat))
        return quote_msat(job.max_tokens, price_msat=price,
                          price_per_1k_tokens_msat=per_1k,
                          unit_msat=invoice_unit_msat(self.wallet))

    async def _collect_payment(self, job: Job, status: str | None = None) -> bool:
        """The payment step between `quoted` and `processing`; True when the job may run.

        Free jobs (amount 0) pass at once. The payments step replaces this: publish
        `payment-required` with an invoice, record `awaiting_payment` (invoice, hash), wait for
        settlement until the invoice expires, record `paid`, then return True; or record
        `error`/`cancelled`, send feedback and return False.
        """
        if self.payments is not None:
            return await self.payments.collect(job, status)
        if job.amount_msat == 0 or (self.store is not None and self.store.status(job.id) == "paid"):
            return True
        reason = "this provider charges for jobs but has no wallet to invoice with"
        self._fail(job, reason)
        return False

    async def _process(self, job: Job, *, fresh: bool = False) -> None:
        assert self.store is not None
        try:
            status = "seen" if fresh else self.store.status(job.id)
            if status in ("seen", "quoted"):
                if not await self._fit_context(job):
                    return
                job.amount_msat = self.quote(job)
                bid = job.request.bid_msat
                if job.amount_msat and bid is not None and bid < job.amount_msat:
                    self._fail(job, f"price is {job.amount_msat} msat, above your bid of {bid} msat",
                               amount_msat=job.amount_msat)
                    return
            if status == "seen" and job.amount_msat == 0:
                await self._run(job, straight=True)  # nothing to quote: seen -> processing in one write
                return
            if job.amount_msat and status in ("seen", "quoted") and self._key_delivery(job):
                # pay for the key: run first, the sealed result is the quote and its invoice;
                # nothing waits in `quoted` (a store from before may have it), so the claim
                # takes the job to processing in one write, price included
                job.key_delivery = True
                await self._run(job, straight=True)
                return
            if status == "seen":
                if not self.store.transition(job.id, "quoted", amount_msat=job.amount_msat, model=job.model):
                    return
                self._log(job.id, job.customer, job.model, "quoted", job=job)
            elif status not in ("quoted", "awaiting_payment", "paid"):  # resumed after a restart
                return
            # "seen" was just moved to "quoted" above: the payment step need not read it back
            if not await self._collect_payment(job, "quoted" if status == "seen" else None):
                return
            await self._run(job)
        except asyncio.CancelledError:
            self._on_cancelled(job)

    def _key_delivery(self, job: Job) -> bool:
        """Pay for the key when the customer asked for it and our wallet takes a chosen preimage."""
        return wants_key(job.request.extra_params) and self.key_sales is not None

    async def _run(self, job: Job, *, rerun: bool = False, straight: bool = False) -> None:
        """Generate and publish. `straight`: a job that pays nothing first (free, or paid for
        the key), its price and model written by the claim itself."""
        assert self.store is not None
        try:
            async with self.admission.slot(job.customer):
                claimed = (self.store.claim_processing(job.id, amount_msat=job.amount_msat, model=job.model)
                           if straight else self.store.claim_processing(job.id, rerun=rerun))
                if not claimed:
                    log.debug("job %s not claimable (already run or finished)", job.id[:12])
                    return
                self._log(job.id, job.customer, job.model, "processing", detail="re-run after restart" if rerun else "")
                self._metric("processing")
                self._say_processing_soon(job)
                paid = job.amount_msat and not job.key_delivery  # key mode: nothing is paid before the result
                text = await self._generate_paid(job) if paid else await self._generate(job)
            self._quiet(job)  # done before the notice was due: the result says it all
            await self._publish_result(job, text)
        except asyncio.CancelledError:
            self._on_cancelled(job)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable):
                self._check_health_now.set()
            self._fail(job, f"backend error: {exc}")
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            self._fail(job, f"invalid parameters: {problems}")
        except Exception as exc:  # a bug must not kill the provider; the customer hears of it
            log.exception("job %s failed", job.id[:12])
            self._fail(job, f"internal error: {type(exc).__name__}")

    async def _generate_paid(self, job: Job) -> str:
        """A paid job's generation: a backend that cannot be reached is tried again with backoff
        until the job's deadline (its NIP-40 expiration, else `paid_job_deadline_s` after the
        payment); then the error goes up and `_fail` offers the refund."""
        deadline = (job_deadline(job.request.event, job.paid_at, default_s=self.paid_job_deadline_s)
                    if job.request.event is not None else time.time() + self.paid_job_deadline_s)
        delay = 0.25
        while True:
            try:
                return await self._generate(job)
            except BackendUnavailable as exc:
                self._check_health_now.set()
                if time.time() + delay >= deadline:
                    raise
                log.warning("job %s: backend unavailable (%s); paid, retrying for %.0f s more", job.id[:12], exc,
                            deadline - time.time())
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _say_processing_soon(self, job: Job) -> None:
        """`processing` feedback PROCESSING_NOTICE_S after the claim, if the job is still running.

        Why not at once: a job answered within that time would carry one more signed event
        through the relay to the customer than it needs (about a fifth of the CPU per job of
        relay, provider and client together), and its result says the same thing a moment
        later. What a customer loses: for such a job, no separate `processing` stage. A job
        that fails says `processing` before its error, so the customer knows the provider was
        at work on it (a decline is an error without it; see docs/PROTOCOL.md)."""
        loop = asyncio.get_running_loop()

        def say() -> None:
            job.notice = None
            if self._started.is_set():
                # then every HEARTBEAT_S while it runs: what the customer's stall check listens
                # for when no partials come (a partial calls this off: `_quiet`)
                self._feedback_soon(job.request, "processing", extra="still generating" if job.said_processing else "")
                job.said_processing = True
                job.notice = loop.call_later(HEARTBEAT_S, say)

        job.at_work = True
        job.notice = loop.call_later(PROCESSING_NOTICE_S, say)

    @staticmethod
    def _quiet(job: Job) -> None:
        """Call off a `processing` notice not yet due."""
        if job.notice is not None:
            job.notice.cancel()
            job.notice = None

    def _on_cancelled(self, job: Job) -> None:
        self._quiet(job)
        if not job.cancelled_by_customer:
            raise asyncio.CancelledError  # shutdown: the job stays where it was, resumed on restart
        assert self.store is not None
        if self.store.transition(job.id, "cancelled"):
            self.stats.cancelled += 1
            self._metric("cancelled")
            self._log(job.id, job.customer, job.model, "cancelled", detail="by the customer")

    async def _generate(self, job: Job) -> str:
        req = job.request
        chat = ChatRequest(
            model=job.model, messages=req.messages, max_tokens=job.max_tokens, temperature=req.temperature,
            top_p=req.top_p, top_k=req.top_k, frequency_penalty=req.frequency_penalty,
            response_format=req.response_format, stop=req.stop, seed=req.seed,
            tools=req.tools, tool_choice=req.tool_choice,
        )
        parts: list[str] = []
        # partials only for a customer who asked to stream (each is a signed event through the
        # relay); never in key mode, where nothing is readable before payment
        partials = (PartialCoalescer(self.partial_interval_s, self.partial_max_chars)
                    if req.stream and self.partial_interval_s is not None and not job.key_delivery else None)
        stats = self.stats
        stats.generations += 1
        stats.backend_in_flight += 1
        stats.max_backend_in_flight = max(stats.max_backend_in_flight, stats.backend_in_flight)
        t0 = time.perf_counter()
        ok = False
        try:
            if partials is None:  # the customer reads only the result: one answer, no deltas to parse
                final = await self.backend.complete_chat(chat)
                parts.append(final.text)
                _take_summary(job, final)
            else:
                async for chunk in self.backend.stream_chat(chat):
                    if chunk.text:
                        if not parts and self.metrics is not None:
                            self.metrics.first_token(job.model, time.perf_counter() - t0)
                        parts.append(chunk.text)
                        due = partials.push(chunk.text, time.monotonic())
                        if due is not None:
                            if job.notice is not None:  # a partial says "at work" already
                                self._quiet(job)
                                job.said_processing = True
                            self._feedback_soon(req, "partial", content=due[0], offset=due[1])
                    _take_summary(job, chunk)
            ok = True
        finally:
            stats.backend_in_flight -= 1
            if self.metrics is not None:
                self.metrics.observe_backend(job.model, time.perf_counter() - t0, ok=ok)
        return "".join(parts)

    async def _publish_result(self, job: Job, text: str) -> None:
        assert self.store is not None
        content, tags = JobResult.parts(
            self.keys, job.request, text, model=job.model, prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens, amount_msat=job.amount_msat, bolt11=job.bolt11,
            finish_reason=job.finish_reason, tool_calls=job.tool_calls,
        )
        invoice: Invoice | None = None
        if job.key_delivery:
            sealed = await self._seal_for_key(job, content, tags)
            if sealed is None:
                return
            event, invoice = sealed
        else:
            event = Event.build(self.keys, KIND_RESULT, content, tags)
        # a sealed result's invoice is kept with it, before either goes out
        self.store.mark_result_ready(job.id, event.to_json(), key_invoice=None if invoice is None else (
            invoice.bolt11, invoice.payment_hash, invoice.expires_at))
        if invoice is not None:
            self._spawn(self._watch_key_payment_of(job.id, invoice.payment_hash, invoice.expires_at, job))
        await self._publish_stored_result(job, event)

    async def _seal_for_key(self, job: Job, content: str, tags: list[list[str]]) -> tuple[Event, Invoice] | None:
        """Pay for the key (pylon.jobs.keyed): the result sealed under a fresh key P, with an
        invoice whose payment hash is sha256(P) (a hold invoice where the wallet offers those:
        pylon.provider.keysale); paying it is what reveals P to the customer."""
        assert self.key_sales is not None
        key = new_key()
        try:  # P is recorded for a hold invoice; the caller keeps the invoice with the sealed result
            invoice = await self.key_sales.invoice(job.id, job.amount_msat, key, f"pylon job {job.id} (pay for the key)",
                                                   self.invoice_expiry_s)
        except Exception as exc:
            self._fail(job, f"provider could not create an invoice: {type(exc).__name__}")
            return None
        job.bolt11 = invoice.bolt11
        tags = [t for t in tags if t[:1] != ["amount"]]
        tags += [["amount", str(job.amount_msat), invoice.bolt11], [DELIVERY_TAG, KEY_MODE, key_hash(key)]]
        self._log(job.id, job.customer, job.model, "payment-required", job=job, detail="pay for the key")
        return Event.build(self.keys, KIND_RESULT, seal(key, content), tags), invoice

    async def _watch_key_payment_of(self, job_id: str, payment_hash: str, expires_at: int,
                                    job: Job | None = None) -> None:
        """Record when the key is bought (the job itself is done either way: nothing to deliver
        later): the store's paid_at, so earnings and the paid/earned counters include it.
        Restarted with the invoice still open, the provider watches it again; a hold invoice is
        settled with the key from the store once the payment is locked (pylon.provider.keysale)."""
        if self.wallet is None:
            return
        if self.key_sales is not None:
            state = await self.key_sales.collect(job_id, payment_hash, expires_at)
        else:  # the wallet sells no keys now: a preimage invoice from an earlier run settles by itself
            state = await wait_for_invoice(self.wallet, payment_hash, expires_at, label=f"job {job_id[:12]} (key)")
            if state == InvoiceState.SETTLED and self.store is not None:
                self.store.mark_key_paid(job_id)  # earnings and the paid/earned counters count it now
        if state == InvoiceState.SETTLED:
            self._log(job_id, job.customer if job else "", job.model if job else None, "paid", job=job,
                      detail="the key was bought")

    async def _republish(self, job: Job, result_json: str) -> None:
        try:
            event = Event.from_json(result_json)
            usage = event.first_tag("usage")
            if usage and len(usage) >= 3:
                job.prompt_tokens, job.completion_tokens = int(usage[1]), int(usage[2])
            await self._publish_stored_result(job, event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(job, f"could not republish the stored result: {exc}")

    async def _publish_stored_result(self, job: Job, event: Event) -> None:
        assert self.store is not None and self.pool is not None
        # Delivery until acknowledged (pylon.provider.delivery): the signed result is in the store;
        # it is published until a relay says OK, across reconnects; a stop leaves
        # the job `processing` with its result, and the next start republishes it. A job is
        # never marked failed while its result exists.
        pool = self.pool
        self._release(job)
        await until_accepted(lambda: pool.publish(event), f"job {job.id[:12]}: result")
        self.store.mark_result_published(job.id, event.id, prompt_tokens=job.prompt_tokens,
                                         completion_tokens=job.completion_tokens, amount_msat=job.amount_msat)
        self.stats.done += 1
        self.admission.served(job.customer)
        if self.metrics is not None:
            tokens = (job.prompt_tokens or 0, job.completion_tokens or 0) if job.prompt_tokens is not None else None
            self.metrics.job_finished("success", tokens=tokens)
        self._log(job.id, job.customer, job.model, "done", job=job)

    def _fail(self, job: Job, reason: str, *, feedback: bool = True, amount_msat: int | None = None) -> None:
        assert self.store is not None
        self._quiet(job)
        if job.at_work and not job.said_processing and feedback:  # it was at work: say so before the error
            job.said_processing = True
            self._feedback_soon(job.request, "processing")
        self.store.transition(job.id, "error", error=reason)
        self.stats.errors += 1
        if self.metrics is not None:
            self.metrics.job_finished("error")
        self._log(job.id, job.customer, job.model, "error", job=job, detail=reason)
        # a job that was paid owes its money back: recorded before the error says so (Refunds)
        refund = self.refunds.offer(job.id, job.amount_msat) if self.refunds is not None and job.amount_msat else None
        if feedback or refund:
            extra_tags = [[REFUND_TAG, str(refund)]] if refund else None
            self._feedback_soon(job.request, "error", extra=reason + (f"; {refund} msat will be refunded on request"
                                                                      if refund else ""),
                                amount_msat=amount_msat, extra_tags=extra_tags,
                                deliver_as="refund offer" if refund else None)  # owed: until acknowledged

    # ------------------------------------------------------------------ publishing helpers
    def _feedback_soon(self, req: JobRequest, status: Any, *, deliver_as: str | None = None, **kwargs: Any) -> None:
        """Sign and publish feedback without holding up the job (failures are logged; with
        `deliver_as`, published until a relay accepts it, pylon.provider.delivery).

        Building and signing happen in the spawned task too, so e.g. the `processing` feedback
        costs the job nothing before its backend call starts; tasks run in creation order, so
        feedback events still go out in the order they were asked for."""
        self._spawn(self._build_and_publish(req, status, kwargs, deliver_as))

    async def _build_and_publish(self, req: JobRequest, status: Any, kwargs: dict[str, Any],
                                 deliver_as: str | None) -> None:
        pool = self.pool
        if pool is None:
            return
        try:
            event = JobFeedback.build(self.keys, req, status, **kwargs)
        except Exception as exc:
            log.warning("could not build %s feedback for %s: %s", status, req.id[:12], exc)
            return
        if deliver_as is not None:
            await until_accepted(lambda: pool.publish(event), deliver_as, level=logging.INFO)
            return
        try:
            await pool.publish(event)
        except RelayError as exc:
            log.debug("%s feedback not accepted: %s", status, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_feedback(self, req: JobRequest, status: FeedbackStatus, /, **kwargs: Any) -> None:
        """Build, sign and publish feedback now; RelayError when no relay accepted it."""
        assert self.pool is not None
        await self.pool.publish(JobFeedback.build(self.keys, req, status, **kwargs))

    def _payment_progress(self, job: Job, status: str, detail: str = "") -> None:
        """The payment step's state changes: logged (but "expired", already logged as the
        job's error) and counted; "paid" also counts the money earned."""
        if status != "expired":
            self._log(job.id, job.customer, job.model, status, job=job, detail=detail)
        self._metric(status)
        if status == "paid" and self.metrics is not None:
            self.metrics.earned(int(job.amount_msat))

    def _metric(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.job_status(status)

    def _log(self, job_id: str, customer: str, model: str | None, status: str, *, job: Job | None = None,
             detail: str = "") -> None:
        """One log line per job step: the steps every job takes on its way (seen, quoted,
        payment-required, processing) at DEBUG, its outcome and the money it brought (done,
        error, paid, refunds) at INFO: one INFO line per free job and two per paid one, the
        operator's access log, without formatting three more."""
        if self.metrics is not None:  # stage timings (queue wait, payment wait, end to end)
            self.metrics.job_event(job_id, status)
        level = logging.DEBUG if status in _ROUTINE_STEPS else logging.INFO
        if not log.isEnabledFor(level):
            return
        tokens = msat = duration = None
        if job is not None:
            if job.prompt_tokens is not None:
                tokens = f"{job.prompt_tokens}+{job.completion_tokens}"
            msat = job.amount_msat
            duration = time.monotonic() - job.started
        log.log(
            level, "job %s %s customer=%s model=%s tokens=%s msat=%s duration=%s%s",
            job_id[:12], status, customer[:12], model or "-", tokens or "-", "-" if msat is None else msat,
            "-" if duration is None else f"{duration:.3f}s", f" ({detail})" if detail else "",
            extra={"job": job_id, "status": status, "customer": customer, "model": model,
                   "prompt_tokens": job.prompt_tokens if job else None,
                   "completion_tokens": job.completion_tokens if job else None,
                   "msat": msat, "duration_s": duration, "reason": detail or None},
        )
