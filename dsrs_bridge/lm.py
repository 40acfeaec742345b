"""`pylon_lm()`: a dspy.LM whose every call is a NIP-90 job on the swarm.

Built on DSPy 3.4's engine API (`dspy.LM("pylon/<model>", engine=..., async_engine=...)`):
DSPy keeps caching, retries, `n`, usage accounting, history and callbacks; the engines
do exactly one attempt each, through a `SwarmHub` that holds

- one PylonClient (one RelayPool, one websocket per relay) per event loop: async callers
  use their own loop's client; sync callers — every dspy.Parallel / Evaluate thread —
  go through one background loop thread, so they all share one relay connection;
- single-flight: an identical request already in flight on that loop is joined, not sent
  again (DSPy resubmits stragglers after 120 s; a second paid job for the same prompt is
  money lost). The joiner's response says `joined` and carries 0 msat;
- the spending caps: `max_msat_per_call` is the bid of every job, `budget_msat` caps the
  hub's total (each job's bid is at most what is left). A refusal to pay becomes
  lm15 BillingError, which DSPy does not retry; no answer in time, relay rate limits and
  provider errors become lm15 TimeoutError / RateLimitError / ServerError, which it does.

Every Response carries `provider_data["pylon"]` = job_id, provider, paid_msat, fee_msat,
result_event_id, joined, encrypted, timings — so `lm.history` shows what each call cost,
and the DAG recorder (dsrs_bridge.recorder) links LM nodes to their kind-5050 jobs.
Answers served from DSPy's cache never reach the engine, so they cost nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import os
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

log = logging.getLogger(__name__)

# DSPy would fetch a model price map from the internet on first use; Pylon runs offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

_SUPPORTED_PARAMS = frozenset({"temperature", "max_tokens", "top_p", "top_k", "stop", "seed",
                               "frequency_penalty", "response_format", "stream", "n"})


# -- the background loop for sync callers ---------------------------------------------------
class _LoopThread:
    """An event loop in a daemon thread: sync code submits coroutines and waits on them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="pylon-lm-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro) -> "asyncio.Future":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro) -> Any:
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True)
class JobOptions:
    """What every job of one LM carries besides the prompt."""

    model: str
    provider: str | None = None
    timeout: float = 60.0
    encrypted: bool | None = None


class SwarmHub:
    """Shared PylonClients (one per event loop), single-flight, and the spending caps."""

    def __init__(self, relays: Sequence[str], *, keys: Any = None, wallet: Any = None,
                 max_msat_per_call: int | None = None, budget_msat: int | None = None,
                 client_factory: Callable[..., Any] | None = None) -> None:
        for name, value in (("max_msat_per_call", max_msat_per_call), ("budget_msat", budget_msat)):
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name} must be a non-negative integer number of millisats")
        self.relays = list(relays)
        self.keys = keys
        self.wallet = wallet
        self.max_msat_per_call = max_msat_per_call
        self.budget_msat = budget_msat
        self._factory = client_factory
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._starting: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future] = {}
        self._thread: _LoopThread | None = None
        self.spent_msat = 0
        self.jobs_started = 0
        self.jobs_joined = 0
        _HUBS.add(self)

    # -- clients --------------------------------------------------------------------------
    def _new_client(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from pylon.customer.client import PylonClient

        return PylonClient(self.relays, keys=self.keys, wallet=self.wallet, max_msat=self.max_msat_per_call)

    async def client(self) -> Any:
        """This event loop's started PylonClient (created on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is not None:
            return client
        with self._lock:
            self._reap_closed_loops()
            gate = self._starting.setdefault(loop, asyncio.Lock())
        async with gate:
            client = self._clients.get(loop)
            if client is None:
                client = self._new_client()
                await client.start()
                self._clients[loop] = client
        return client

    def _reap_closed_loops(self) -> None:
        for loop in [lp for lp in self._clients if lp.is_closed()]:
            self._clients.pop(loop, None)
            self._starting.pop(loop, None)

    def background(self) -> _LoopThread:
        with self._lock:
            if self._thread is None:
                self._thread = _LoopThread()
            return self._thread

    # -- money ------------------------------------------------------------------------------
    def bid_msat(self) -> int | None:
        """The most the next job may cost: the per-call cap, within what the budget has left."""
        with self._lock:
            caps = []
            if self.max_msat_per_call is not None:
                caps.append(self.max_msat_per_call)
            if self.budget_msat is not None:
                caps.append(max(0, self.budget_msat - self.spent_msat))
        return min(caps) if caps else None

    def _charge(self, outcome: Any) -> None:
        with self._lock:
            self.spent_msat += int(getattr(outcome, "paid_msat", 0) or 0) + int(getattr(outcome, "fee_msat", 0) or 0)

    # -- asking -----------------------------------------------------------------------------
    async def ask(self, key: str, messages: list[dict], params: dict[str, Any], opts: JobOptions) -> tuple[Any, bool]:
        """Run (or join) the job for `key`; returns (outcome, joined)."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        existing = self._inflight.get(slot)
        if existing is not None:
            with self._lock:
                self.jobs_joined += 1
            return await asyncio.shield(existing), True
        future: asyncio.Future = loop.create_future()
        self._inflight[slot] = future
        try:
            client = await self.client()
            with self._lock:
                self.jobs_started += 1
            outcome = await client.ask(messages, **params, provider=opts.provider, bid_msat=self.bid_msat(),
                                       timeout=opts.timeout, encrypted=opts.encrypted)
            self._charge(outcome)
            future.set_result(outcome)
            return outcome, False
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: joiners re-raise it, nobody else must
            raise
        finally:
            self._inflight.pop(slot, None)

    def stream(self, messages: list[dict], params: dict[str, Any], opts: JobOptions, client: Any) -> Any:
        return client.stream(messages, **params, provider=opts.provider, bid_msat=self.bid_msat(),
                             timeout=opts.timeout, encrypted=opts.encrypted)

    # -- closing ------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close this loop's client (call from the loop that used it)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the background loop's client and stop the loop thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        client = self._clients.pop(thread.loop, None)
        if client is not None:
            try:
                thread.run(client.close())
            except Exception:  # pragma: no cover - best effort at shutdown
                log.debug("closing the background PylonClient failed", exc_info=True)
        thread.stop()


_HUBS: "weakref.WeakSet[SwarmHub]" = weakref.WeakSet()


@atexit.register
def _close_hubs() -> None:  # pragma: no cover - interpreter shutdown
    for hub in list(_HUBS):
        hub.close()


# -- request / response translation -------------------------------------------------------------
def _lm15():
    from dspy import lm15

    return lm15


def request_to_chat(request: Any, default_model: str) -> tuple[list[dict], dict[str, Any]]:
    """lm15 Request -> (chat messages with system + turns, sampling params for PylonClient.ask)."""
    lm15 = _lm15()
    if request.tools:
        raise lm15.UnsupportedFeatureError("Pylon jobs carry text chat only; native tool calling is not supported",
                                           feature="tools")
    messages: list[dict] = []
    if request.system is not None:
        if isinstance(request.system, str):
            system = request.system
        else:
            if not all(isinstance(p, lm15.TextPart) for p in request.system):
                raise lm15.UnsupportedFeatureError("Pylon jobs carry text only", feature="multimodal")
            system = "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        text = message.text
        if text is None:
            raise lm15.UnsupportedFeatureError("Pylon jobs carry text only (no images, files or tool parts)",
                                               feature="multimodal")
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": text})
    cfg = request.config
    params: dict[str, Any] = {"model": _model_name(request.model or default_model)}
    for name in ("max_tokens", "temperature", "top_p", "top_k", "frequency_penalty", "seed"):
        value = getattr(cfg, name, None)
        if value is not None:
            params[name] = value
    if cfg.stop:
        params["stop"] = list(cfg.stop)
    if cfg.response_format is not None:
        params["response_format"] = openai_response_format(cfg.response_format)
    return messages, params


def _model_name(model: str) -> str:
    return model.split("/", 1)[1] if model.startswith("pylon/") else model


def openai_response_format(fmt: dict) -> dict:
    """lm15's {"type": "json_schema", "schema", "name", "strict"} -> the OpenAI chat shape
    providers forward to vLLM ({"type": "json_schema", "json_schema": {...}})."""
    if fmt.get("type") != "json_schema":
        return dict(fmt)
    inner = {"name": fmt.get("name") or "output", "schema": fmt["schema"]}
    if "strict" in fmt:
        inner["strict"] = fmt["strict"]
    return {"type": "json_schema", "json_schema": inner}


def request_key(messages: list[dict], params: dict[str, Any], opts: JobOptions) -> str:
    """Identity of a request for single-flight: everything that changes the answer."""
    blob = json.dumps({"m": messages, "p": params, "provider": opts.provider}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def pylon_data(outcome: Any, joined: bool) -> dict[str, Any]:
    timings = {k: float(v) for k, v in (getattr(outcome, "timings", {}) or {}).items()}
    return {"pylon": {
        "job_id": outcome.job_id,
        "provider": outcome.provider,
        "paid_msat": 0 if joined else int(outcome.paid_msat or 0),
        "fee_msat": 0 if joined else int(getattr(outcome, "fee_msat", 0) or 0),
        "result_event_id": getattr(outcome, "result_event_id", "") or "",
        "encrypted": bool(getattr(outcome, "encrypted", False)),
        "joined": joined,
        "timings": timings,
    }}


def _usage(outcome: Any):
    lm15 = _lm15()
    u = getattr(outcome, "usage", None)
    return lm15.Usage(input_tokens=getattr(u, "prompt_tokens", None), output_tokens=getattr(u, "completion_tokens", None))


def outcome_to_response(outcome: Any, joined: bool, model: str):
    lm15 = _lm15()
    return lm15.Response(
        id=outcome.job_id,
        model=outcome.model or _model_name(model),
        message=lm15.Message.assistant([lm15.TextPart(outcome.text or "")]),
        finish_reason="stop",
        usage=_usage(outcome),
        provider_data=pylon_data(outcome, joined),
    )


def to_lm15_error(exc: BaseException) -> BaseException:
    """Pylon failures -> lm15's canonical errors, which DSPy maps onto its retry policy."""
    lm15 = _lm15()
    from pylon.errors import JobError, PaymentError, RelayError

    from pylon.customer.client import JobCancelled, JobTimeout, NoProviderAnswered
    from pylon.customer.payments import PaidNoResult

    message = str(exc)
    if isinstance(exc, PaymentError):
        return lm15.BillingError(f"payment refused, not retried: {message}", provider="pylon")
    if isinstance(exc, PaidNoResult):  # a retry would be a new job, paid again: let the caller decide
        return lm15.BillingError(f"paid without a result, not retried: {message}", provider="pylon")
    if isinstance(exc, JobCancelled):
        return exc
    if isinstance(exc, (NoProviderAnswered, JobTimeout)):
        return lm15.TimeoutError(message, provider="pylon")
    if isinstance(exc, RelayError):
        if "rate-limited" in message or "rate limit" in message.lower():
            return lm15.RateLimitError(message, provider="pylon")
        return lm15.TransportError(message, provider="pylon")
    if isinstance(exc, JobError):
        if "rate" in message.lower() and "limit" in message.lower():
            return lm15.RateLimitError(message, provider="pylon")
        return lm15.ServerError(message, provider="pylon")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return lm15.TimeoutError(message or "timed out", provider="pylon")
    return exc


# -- the engines ------------------------------------------------------------------------------------
class _EngineBase:
    supports_function_calling = False
    supports_reasoning = False
    supports_response_schema = True
    supported_params = _SUPPORTED_PARAMS

    def __init__(self, hub: SwarmHub, opts: JobOptions) -> None:
        self.hub = hub
        self.opts = opts

    def _prepare(self, request: Any) -> tuple[list[dict], dict[str, Any], str]:
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        messages, params = request_to_chat(request, self.opts.model)
        return messages, params, request_key(messages, params, self.opts)

    async def _complete(self, request: Any):
        messages, params, key = self._prepare(request)
        try:
            outcome, joined = await self.hub.ask(key, messages, params, self.opts)
        except Exception as exc:
            mapped = to_lm15_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return outcome_to_response(outcome, joined, self.opts.model)

    async def _events(self, request: Any) -> AsyncIterator[Any]:
        """Start, one text delta per `partial` feedback, end (with usage and pylon data)."""
        lm15 = _lm15()
        messages, params, _ = self._prepare(request)
        client = await self.hub.client()
        job = self.hub.stream(messages, params, self.opts, client)
        started = False
        try:
            async for delta in job:
                if not started:
                    started = True
                    yield lm15.StreamStartEvent(model=params["model"])
                if delta:
                    yield lm15.StreamDeltaEvent(delta=lm15.TextDelta(text=delta, part_index=0))
        except Exception as exc:
            mapped = to_lm15_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            await job.aclose()
        outcome = job.outcome
        self.hub._charge(outcome)
        if not started:
            yield lm15.StreamStartEvent(model=params["model"])
            if outcome.text:
                yield lm15.StreamDeltaEvent(delta=lm15.TextDelta(text=outcome.text, part_index=0))
        yield lm15.StreamEndEvent(finish_reason="stop", usage=_usage(outcome), provider_data=pylon_data(outcome, False))

    # Saving a program saves which swarm model it used, never keys or wallets.
    def dump_state(self) -> dict[str, Any]:
        return {"model": self.opts.model, "relays": self.hub.relays, "provider": self.opts.provider,
                "timeout": self.opts.timeout, "max_msat_per_call": self.hub.max_msat_per_call,
                "budget_msat": self.hub.budget_msat}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "_EngineBase":
        hub = SwarmHub(state.get("relays") or [], max_msat_per_call=state.get("max_msat_per_call"),
                       budget_msat=state.get("budget_msat"))
        return cls(hub, JobOptions(state["model"], state.get("provider"), float(state.get("timeout", 60.0))))


class PylonEngine(_EngineBase):
    """The sync engine: runs on the hub's background loop, so all threads share one client."""

    def complete(self, request: Any):
        return self.hub.background().run(self._complete(request))

    def stream(self, request: Any) -> Iterator[Any]:
        bg = self.hub.background()
        items: "queue.Queue[tuple[str, Any]]" = queue.Queue()

        async def pump() -> None:
            try:
                async for event in self._events(request):
                    items.put(("event", event))
            except BaseException as exc:  # handed to the consuming thread
                items.put(("error", exc))
                return
            items.put(("done", None))

        future = bg.submit(pump())
        try:
            while True:
                kind, value = items.get()
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            if not future.done():
                future.cancel()  # the consumer left early: cancel the job (kind 5 published)

    def close(self) -> None:
        """Borrowed by dspy.LM: closing the hub is `dsrs_bridge.lm.close(lm)`'s job."""


class AsyncPylonEngine(_EngineBase):
    """The async engine: the running loop's own client."""

    async def complete(self, request: Any):
        return await self._complete(request)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        async for event in self._events(request):
            yield event

    async def aclose(self) -> None:
        """Borrowed by dspy.LM: see `aclose(lm)`."""


# -- public API ------------------------------------------------------------------------------------
def pylon_lm(model: str, *, relays: Sequence[str], wallet: Any = None, max_msat_per_call: int | None = None,
             budget_msat: int | None = None, provider: str | None = None, keys: Any = None,
             timeout: float = 60.0, encrypted: bool | None = None, **dspy_lm_kwargs: Any):
    """A dspy.LM whose calls run as NIP-90 kind-5050 jobs on the swarm.

        lm = pylon_lm("tiny-llama", relays=["ws://127.0.0.1:7777"], wallet=w,
                      max_msat_per_call=2_000, budget_msat=50_000, temperature=0.0)
        dspy.configure(lm=lm)

    `provider` (npub or hex) targets one provider (its jobs are then encrypted unless
    `encrypted=False`); `keys` is the customer identity (default: PYLON_HOME's);
    `timeout` bounds each job; the rest (temperature, max_tokens, cache, num_retries, …)
    goes to dspy.LM. Copies of the LM (BootstrapFewShot makes them) share the hub.
    """
    import dspy

    if not relays:
        raise ValueError("pylon_lm needs at least one relay URL")
    if provider is not None:
        from pylon.nostr.keys import normalize_pubkey

        provider = normalize_pubkey(provider)
    name = model if model.startswith("pylon/") else f"pylon/{model}"
    hub = SwarmHub(relays, keys=keys, wallet=wallet, max_msat_per_call=max_msat_per_call, budget_msat=budget_msat)
    opts = JobOptions(name, provider, float(timeout), encrypted)
    lm = dspy.LM(name, engine=PylonEngine(hub, opts), async_engine=AsyncPylonEngine(hub, opts), **dspy_lm_kwargs)
    return lm


def hub_of(lm: Any) -> SwarmHub:
    """The SwarmHub behind a pylon_lm (spent_msat, jobs_started, jobs_joined)."""
    engine = getattr(lm, "_engine_spec", None)
    if not isinstance(engine, _EngineBase):
        raise TypeError("not a pylon_lm")
    return engine.hub


def history_msat(lm: Any) -> int:
    """Msats paid by the calls in `lm.history` (cache hits and joined calls paid nothing)."""
    total = 0
    for entry in getattr(lm, "history", []) or []:
        if not entry.get("usage"):
            continue  # a DSPy cache hit: no engine call, no payment
        responses = entry.get("response")
        for response in responses if isinstance(responses, (list, tuple)) else [responses]:
            data = (getattr(response, "provider_data", None) or {}).get("pylon") or {}
            total += int(data.get("paid_msat", 0) or 0) + int(data.get("fee_msat", 0) or 0)
    return total


def close(lm: Any) -> None:
    """Close the background client and loop thread of a pylon_lm (sync callers)."""
    hub_of(lm).close()


async def aclose(lm: Any) -> None:
    """Close the running loop's client of a pylon_lm (async callers)."""
    await hub_of(lm).aclose()
