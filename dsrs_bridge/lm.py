"""`pylon_lm()`: a dspy.LM whose every call is a NIP-90 job on the swarm.

Built on DSPy 3.4's engine API (`dspy.LM("pylon/<model>", engine=..., async_engine=...)`):
DSPy keeps caching, retries, `n`, usage accounting, history and callbacks; the engines do
exactly one attempt each, through a `SwarmHub` (dsrs_bridge.hub: shared clients, the core
Budget, single-flight, closing). What DSPy sees:

- errors it can act on (dsrs_bridge.errors): refusals to pay, budgets used up, unknown models
  and bad requests are not retried; only transient faults are;
- `rollout_id` (and every sampling parameter) is part of a request's identity: parallel
  rollouts are separate jobs, only truly identical requests in flight are joined;
- cost where DSPy users look: each history entry's `cost` is the msats that call paid
  (unit: millisatoshi, not USD; `cost_details` says so and names the job), `get_lm_usage()`
  has an `msat` total beside the tokens, `finish_reason` is the backend's ("length" when the
  answer was cut at max_tokens), and every Response carries `provider_data["pylon"]` =
  job_id, provider, paid_msat, fee_msat, result_event_id, joined, encrypted, timings;
- `history_msat(lm)` counts the calls of the LM and of its copies (Refine, BestOfN, and the
  optimizers call copies, whose own `history` the original never sees);
- `with pylon_lm(...) as lm:` closes it; `close(lm)` returns promptly even with calls in
  flight (they raise JobCancelled, their jobs are cancelled).
Answers served from DSPy's cache never reach the engine, so they cost nothing.
"""

from __future__ import annotations

import atexit
import contextvars
import hashlib
import json
import logging
import os
import queue
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import Wallet

from dsrs_bridge.errors import to_lm15_error
from dsrs_bridge.hub import JobOptions, SwarmHub, close_all_hubs, lm_closed_error

log = logging.getLogger(__name__)

# DSPy would fetch a model price map from the internet on first use; Pylon runs offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

__all__ = ["pylon_lm", "PylonLM", "hub_of", "history_msat", "close", "aclose", "SwarmHub", "JobOptions",
           "to_lm15_error", "PylonEngine", "AsyncPylonEngine"]

_SUPPORTED_PARAMS = frozenset({"temperature", "max_tokens", "top_p", "top_k", "stop", "seed",
                               "frequency_penalty", "response_format", "stream", "n"})

# DSPy keeps rollout_id out of the lm15 Request (it only keys its cache): PylonLM.__call__ /
# acall put it here for the engine, which runs in the same thread / task.
_ROLLOUT: contextvars.ContextVar[Any] = contextvars.ContextVar("pylon_lm_rollout_id", default=None)

atexit.register(close_all_hubs)


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


def request_key(messages: list[dict], params: dict[str, Any], opts: JobOptions, rollout_id: Any = None) -> str:
    """Identity of a request for single-flight: everything that changes the answer, and the rollout."""
    blob = json.dumps({"m": messages, "p": params, "provider": opts.provider, "rollout": rollout_id},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
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
        "finish_reason": finish_reason(outcome),
        "timings": timings,
    }}


def finish_reason(outcome: Any) -> str:
    """The backend's finish reason as the provider reported it ("stop" when it did not say)."""
    reason = getattr(outcome, "finish_reason", None)
    return reason if reason in ("stop", "length", "content_filter", "tool_call", "error") else "stop"


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
        finish_reason=finish_reason(outcome),
        usage=_usage(outcome),
        provider_data=pylon_data(outcome, joined),
    )


def _raise_mapped(exc: Exception) -> None:
    mapped = to_lm15_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


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
        return messages, params, request_key(messages, params, self.opts, _ROLLOUT.get())

    async def _complete(self, request: Any, prepared: tuple[list[dict], dict[str, Any], str] | None = None):
        messages, params, key = prepared or self._prepare(request)
        try:
            outcome, joined = await self.hub.ask(key, messages, params, self.opts)
        except Exception as exc:
            _raise_mapped(exc)
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
            _raise_mapped(exc)
        finally:
            await job.aclose()
        outcome = job.outcome
        if not started:
            yield lm15.StreamStartEvent(model=params["model"])
            if outcome.text:
                yield lm15.StreamDeltaEvent(delta=lm15.TextDelta(text=outcome.text, part_index=0))
        yield lm15.StreamEndEvent(finish_reason=finish_reason(outcome), usage=_usage(outcome),
                                  provider_data=pylon_data(outcome, False))

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
        prepared = self._prepare(request)  # here: the rollout is this thread's context
        return self.hub.background().run(self._complete(request, prepared))

    def stream(self, request: Any) -> Iterator[Any]:
        bg = self.hub.background()
        items: "queue.Queue[tuple[str, Any]]" = queue.Queue()

        async def pump() -> None:
            try:
                async for event in self._events(request):
                    items.put(("event", event))
            except BaseException as exc:  # handed to the consuming thread (cancellation too)
                items.put(("error", exc))
                return
            items.put(("done", None))

        future = bg.submit(pump())
        def _on_done(f: Any) -> None:
            if f.cancelled():
                items.put(("error", lm_closed_error()))

        future.add_done_callback(_on_done)
        try:
            while True:
                kind, value = items.get()
                if kind == "event":
                    yield value
                elif kind == "error":
                    if isinstance(value, BaseException) and not isinstance(value, Exception):
                        raise lm_closed_error() from None  # the loop was stopped under us (close(lm))
                    raise value
                else:
                    return
        finally:
            if not future.done():
                future.cancel()  # the consumer left early: cancel the job (kind 5 published)

    def close(self) -> None:
        """dspy.LM.close() borrows custom engines: closing the hub is PylonLM.close()'s job."""


class AsyncPylonEngine(_EngineBase):
    """The async engine: the running loop's own client."""

    async def complete(self, request: Any):
        return await self._complete(request)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        async for event in self._events(request):
            yield event

    async def aclose(self) -> None:
        """Borrowed by dspy.LM: see PylonLM.aclose()."""


# -- the LM ---------------------------------------------------------------------------------------------
def _make_lm_class():
    import dspy

    class PylonLM(dspy.LM):
        """dspy.LM on a Pylon engine: the rollout reaches the engine, history entries carry
        their msats, and it is a (sync or async) context manager that closes the hub."""

        def _rollout(self, kwargs: dict[str, Any]) -> Any:
            return kwargs.get("rollout_id", self.kwargs.get("rollout_id"))

        def __call__(self, prompt=None, *, messages=None, **kwargs):
            token = _ROLLOUT.set(self._rollout(kwargs))
            try:
                return super().__call__(prompt, messages=messages, **kwargs)
            finally:
                _ROLLOUT.reset(token)

        async def acall(self, prompt=None, *, messages=None, **kwargs):
            token = _ROLLOUT.set(self._rollout(kwargs))
            try:
                return await super().acall(prompt, messages=messages, **kwargs)
            finally:
                _ROLLOUT.reset(token)

        def update_history(self, entry: dict[str, Any]) -> None:
            """Fill DSPy's `cost` with what the call paid, in msat, and count it for the copies too."""
            msat, jobs = _entry_msat(entry)
            if entry.get("usage"):  # not a DSPy cache hit (those paid nothing now)
                entry["cost"] = msat
                entry["cost_details"] = {"kind": "pylon", "unit": "msat", "msat": msat, "jobs": jobs}
                hub = hub_of(self)
                with hub._lock:
                    hub.history_msat += msat
                from dspy.dsp.utils.settings import settings

                if settings.usage_tracker is not None:
                    settings.usage_tracker.add_usage(self.model, {"msat": msat})
            else:
                entry["cost"] = 0
                entry["cost_details"] = {"kind": "pylon", "unit": "msat", "msat": 0, "cache_hit": True}
            super().update_history(entry)

        def inspect_history(self, n: int = 1, file: Any = None) -> None:
            super().inspect_history(n, file=file)
            shown = self.history[-n:]
            print(f"[pylon] these {len(shown)} call(s) paid {sum(e.get('cost') or 0 for e in shown)} msat; "
                  f"this LM and its copies: {history_msat(self)} msat", file=file)

        def close(self) -> None:
            """Cancel the calls in flight and close the background client (returns promptly)."""
            super().close()
            hub_of(self).close()

        async def aclose(self) -> None:
            """Cancel this loop's calls in flight and close its client, and the background one."""
            await super().aclose()
            await hub_of(self).aclose()

        def __deepcopy__(self, memo: dict[int, Any]) -> "PylonLM":
            """Programs are deep-copied (optimizers, Parallel): a copy shares the hub — the
            connection, the budget and the counters — like `lm.copy()`, its history its own."""
            return self.copy()

        def __enter__(self) -> "PylonLM":
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

        async def __aenter__(self) -> "PylonLM":
            return self

        async def __aexit__(self, *exc: object) -> None:
            await self.aclose()
            import asyncio

            await asyncio.to_thread(hub_of(self).close)

    PylonLM.__module__ = __name__
    PylonLM.__qualname__ = "PylonLM"
    return PylonLM


_LM_CLASS: Any = None


def __getattr__(name: str) -> Any:  # PylonLM is built on first use: importing dspy is slow
    if name == "PylonLM":
        return _lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _lm_class() -> Any:
    global _LM_CLASS
    if _LM_CLASS is None:
        _LM_CLASS = _make_lm_class()
    return _LM_CLASS


def _entry_msat(entry: dict[str, Any]) -> tuple[int, list[str]]:
    responses = entry.get("response")
    total, jobs = 0, []
    for response in responses if isinstance(responses, (list, tuple)) else [responses]:
        data = (getattr(response, "provider_data", None) or {}).get("pylon") or {}
        total += int(data.get("paid_msat", 0) or 0) + int(data.get("fee_msat", 0) or 0)
        if data.get("job_id"):
            jobs.append(data["job_id"])
    return total, jobs


# -- public API ------------------------------------------------------------------------------------
def pylon_lm(model: str, *, relays: Sequence[str], wallet: Wallet | str | None = None, max_msat_per_call: int | None = None,
             budget_msat: int | None = None, provider: str | None = None, keys: Any = None,
             timeout: float = 60.0, encrypted: bool | None = None, **dspy_lm_kwargs: Any):
    """A dspy.LM whose calls run as NIP-90 kind-5050 jobs on the swarm.

        with pylon_lm("tiny-llama", relays=["ws://127.0.0.1:7777"], wallet="dev:///tmp/l.sqlite?account=alice",
                      max_msat_per_call=2_000, budget_msat=50_000, temperature=0.0) as lm:
            dspy.configure(lm=lm)
            ...

    `wallet` is a wallet URI or a wallet object (default: the PYLON_WALLET environment
    variable; none: only free providers answer). `max_msat_per_call` is each job's bid and cap
    (default 10,000 msat), `budget_msat` caps what this LM and all its copies spend together.
    `provider` (npub or hex) targets one provider (its jobs are then encrypted unless
    `encrypted=False`); `keys` is the customer identity (default: PYLON_HOME's); `timeout`
    bounds each job in seconds; the rest (temperature, max_tokens, cache, num_retries, …) goes
    to dspy.LM. Copies of the LM share one hub (clients, budget, counters).
    """
    if not relays:
        raise ValueError("pylon_lm needs at least one relay URL: pass relays=[\"ws://…\"]")
    if provider is not None:
        from pylon.nostr.keys import normalize_pubkey

        provider = normalize_pubkey(provider)
    name = model if model.startswith("pylon/") else f"pylon/{model}"
    hub = SwarmHub(relays, keys=keys, wallet=wallet, max_msat_per_call=max_msat_per_call, budget_msat=budget_msat)
    opts = JobOptions(name, provider, float(timeout), encrypted)
    return _lm_class()(name, engine=PylonEngine(hub, opts), async_engine=AsyncPylonEngine(hub, opts),
                       **dspy_lm_kwargs)


def hub_of(lm: Any) -> SwarmHub:
    """The SwarmHub behind a pylon_lm (spent_msat, jobs_started, jobs_joined, history_msat)."""
    engine = getattr(lm, "_engine_spec", None)
    if not isinstance(engine, _EngineBase):
        raise TypeError("not a pylon_lm")
    return engine.hub


def history_msat(lm: Any) -> int:
    """Msats paid by the calls recorded in the history of `lm` and of its copies (cache hits
    and joined calls paid nothing). Equals `hub_of(lm).spent_msat` when every paid call
    completed; a paid job that never delivered is in spent_msat only."""
    return hub_of(lm).history_msat


def close(lm: Any) -> None:
    """Cancel a pylon_lm's calls in flight and close its background client and loop thread.
    Returns within about a second (two at most); the waiting threads raise JobCancelled."""
    hub_of(lm).close()


async def aclose(lm: Any) -> None:
    """Cancel the running loop's calls in flight and close that loop's client (async callers)."""
    await hub_of(lm).aclose()
