"""The OpenAI-compatible HTTP door onto the swarm (`pylon gateway`).

One `PylonClient` (one set of relay connections, one wallet, one budget) serves every HTTP
request: each chat or text completion becomes one NIP-90 job per choice (`n`), with the
customer side's checks and caps applying as they do for `pylon ask`. aiohttp does all the
HTTP work; this module only maps OpenAI's shapes to jobs and back.

Status codes: 400 bad request, 401 wrong API key, 402 refused quote or budget used up,
404 no live provider serves the model, 413 body too large, 502 the provider reported an
error, 503 no provider answered (or no relay), 504 timeout. A client that disconnects
cancels its job(s): the handler is cancelled and the client publishes a kind-5 deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pylon.gateway.responses import (
    chat_chunk, chat_completion, error_body, finish_reason, pylon_info, sse, status_for, text_completion, usage_of,
)
from pylon.customer.offers import ROUTES
from pylon.customer.invoice_check import ABOVE_BID, ABOVE_BUDGET, ABOVE_MAX
from pylon.errors import NostrError, PaymentRefused, PylonError
from pylon.nostr.keys import normalize_pubkey
from pylon.relay.pool import PublishError
from pylon.gateway.schema import ChatCompletionRequest, CompletionRequest, RequestInvalid, parse_body
from pylon.ops.metrics import CONTENT_TYPE_LATEST, render

log = logging.getLogger(__name__)

# A refused payment's hint, for an HTTP caller (the CLI's hints name its flags)
_OPERATOR_HINT = "try another provider (X-Pylon-Provider) or ask the gateway's operator"
_GATEWAY_HINTS = {
    ABOVE_BID: "raise X-Pylon-Max-Msat (or the body's provider.max_msat); the gateway's per-job cap still applies",
    ABOVE_MAX: "the price is above the gateway's per-job cap, which its operator sets (--max-msat); " + _OPERATOR_HINT,
    ABOVE_BUDGET: "the gateway's daily budget is spent; its operator sets it (--daily-budget-msat), or wait for the "
                  "next UTC day",
}

__all__ = ["Gateway", "GatewayError"]

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt a 5050 job can carry (NIP-44: 64 KiB)


class GatewayError(Exception):
    """An HTTP error in OpenAI's shape (status, type, code, param)."""

    def __init__(self, status: int, message: str, *, kind: str, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param

    def response(self) -> web.Response:
        return web.json_response(error_body(str(self), kind=self.kind, code=self.code, param=self.param),
                                 status=self.status)


def _pubkeys(values: list[str], param: str) -> list[str]:
    """npubs or hex keys -> hex; a 400 naming the parameter for anything else."""
    try:
        return [normalize_pubkey(v) for v in values]
    except NostrError:
        raise GatewayError(400, f"{param}: not a provider public key (npub or hex): {values[0][:80]!r}",
                           kind="invalid_request_error", param=param) from None


class _Metrics:
    """Prometheus series for the gateway, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("pylon_gateway_requests_total", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.latency = Histogram("pylon_gateway_request_seconds", "Time to the full response, by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.in_flight = Gauge("pylon_gateway_requests_in_flight", "Requests being answered",
                               registry=self.registry)
        self.jobs = Counter("pylon_gateway_jobs_total", "Jobs run for HTTP requests", registry=self.registry)
        self.paid = Counter("pylon_gateway_paid_msat_total", "Millisats paid to providers (fees included)",
                            registry=self.registry)
        self.tokens = Counter("pylon_gateway_tokens_total", "Tokens reported by providers", ["kind"],
                              registry=self.registry)


class Gateway:
    """aiohttp handlers over one started `PylonClient`.

    `discover` returns the live providers (pylon.jobs.nip89.ProviderInfo list); it feeds
    `/v1/models` and the 404 check, cached for `models_ttl_s`.
    """

    def __init__(self, client: Any, *, discover: Callable[[], Awaitable[list[Any]]] | None = None,
                 api_key: str | None = None, timeout: float = 120.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 models_ttl_s: float = 15.0) -> None:
        self.client = client
        self._discover = discover
        self.api_key = api_key
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.models_ttl_s = models_ttl_s
        self._providers: list[Any] = []
        self._providers_at = float("-inf")
        self._providers_lock = asyncio.Lock()
        self.metrics = _Metrics()

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._middleware])
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model:.+}", self.model)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        endpoint = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
        started = time.monotonic()
        self.metrics.in_flight.inc()
        status = 500
        try:
            if request.path.startswith("/v1/"):
                self._authorize(request)
            response = await handler(request)
            status = response.status
            return response
        except GatewayError as exc:
            status = exc.status
            return exc.response()
        except web.HTTPRequestEntityTooLarge:
            status = 413
            return GatewayError(413, f"the request body is larger than {self.max_body_bytes} bytes",
                                kind="invalid_request_error", code="body_too_large").response()
        except web.HTTPException as exc:  # aiohttp's own 404/405: in OpenAI's shape too
            status = exc.status
            return web.json_response(error_body(exc.reason or "error", kind="invalid_request_error",
                                                code=str(exc.status)), status=exc.status)
        except asyncio.CancelledError:
            status = 499  # the client went away; its jobs were cancelled
            raise
        except Exception:
            log.exception("bug in the gateway while answering %s", request.path)
            return GatewayError(500, "internal error in the gateway (see its log)", kind="server_error").response()
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - started)

    def _authorize(self, request: web.Request) -> None:
        if not self.api_key:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise GatewayError(401, "invalid API key: send `Authorization: Bearer <key>` with the gateway's "
                               "--api-key", kind="invalid_request_error", code="invalid_api_key")

    # ------------------------------------------------------------------ routing
    def _routing(self, request: web.Request, prefs: Any) -> dict[str, Any]:
        """provider / bid from the X-Pylon-* headers or the body's `provider` object."""
        provider = request.headers.get("X-Pylon-Provider") or None
        if provider is None and prefs is not None and prefs.only:
            provider = prefs.only[0]
        cap: int | None = None
        header = request.headers.get("X-Pylon-Max-Msat")
        if header is not None:
            try:
                cap = int(header)
                if cap < 0:
                    raise ValueError
            except ValueError:
                raise GatewayError(400, "X-Pylon-Max-Msat must be a non-negative integer (msat)",
                                   kind="invalid_request_error", param="X-Pylon-Max-Msat") from None
        elif prefs is not None and prefs.max_msat is not None:
            cap = prefs.max_msat
        routing: dict[str, Any] = {"provider": _pubkeys([provider], "provider")[0] if provider else None,
                                   "bid_msat": cap}
        route = request.headers.get("X-Pylon-Route") or (prefs.route if prefs is not None else None)
        if route is not None:
            if route not in ROUTES:
                raise GatewayError(400, f"X-Pylon-Route must be one of {', '.join(ROUTES)}",
                                   kind="invalid_request_error", param="X-Pylon-Route")
            routing["route"] = route
        if prefs is not None and prefs.ignore:
            routing["avoid"] = _pubkeys(prefs.ignore, "provider.ignore")
        return routing

    async def live_providers(self) -> list[Any]:
        if self._discover is None:
            return []
        async with self._providers_lock:
            if time.monotonic() - self._providers_at > self.models_ttl_s:
                try:
                    self._providers = list(await self._discover())
                except Exception as exc:  # discovery is advisory: a relay hiccup must not fail asks
                    log.warning("provider discovery failed: %s", exc)
                self._providers_at = time.monotonic()
            return self._providers

    async def _check_model(self, model: str | None, provider: str | None) -> None:
        """404 when providers are known and none announces the model (unless one is pinned)."""
        if not model or provider is not None:
            return
        providers = await self.live_providers()
        if providers and not any(p.serves(model) for p in providers):
            served = sorted({m for p in providers for m in p.models})
            raise GatewayError(404, f"no live provider serves model {model!r}; served: "
                               f"{', '.join(served[:20]) or 'none announced'}", kind="invalid_request_error",
                               code="model_not_found", param="model")

    async def _tool_provider(self, model: str | None, max_tokens: int | None) -> str:
        """Tools go to a provider that announces tool support: the cheapest live one."""
        capable = [p for p in await self.live_providers() if p.tools and p.serves(model)]
        if not capable:
            raise GatewayError(400, f"no live provider announces tool support{f' for {model!r}' if model else ''}; "
                               "pin one with X-Pylon-Provider if you know it has", kind="invalid_request_error",
                               code="tools_unsupported", param="tools")
        best = min(capable, key=lambda p: (p.quote_msat(max_tokens), -p.last_seen))
        return str(best.pubkey)

    # ------------------------------------------------------------------ jobs
    async def _ask_all(self, prompts: list[Any], params: dict[str, Any], routing: dict[str, Any]) -> list[Any]:
        """One job per prompt, concurrently; the first failure fails the request (as an HTTP error)."""
        tasks = [asyncio.ensure_future(self.client.ask(p, **params, **routing, timeout=self.timeout))
                 for p in prompts]
        try:
            outcomes = await asyncio.gather(*tasks)
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, Exception):
                raise self._as_gateway_error(exc) from None
            raise
        self._account(outcomes)
        return list(outcomes)

    def _account(self, outcomes: list[Any]) -> None:
        self.metrics.jobs.inc(len(outcomes))
        for outcome in outcomes:
            self.metrics.paid.inc(int(outcome.paid_msat or 0) + int(outcome.fee_msat or 0))
            self.metrics.tokens.labels("prompt").inc(int(outcome.usage.prompt_tokens or 0))
            self.metrics.tokens.labels("completion").inc(int(outcome.usage.completion_tokens or 0))

    @staticmethod
    def _as_gateway_error(exc: BaseException) -> GatewayError:
        """Our errors keep their message; anything else is a bug: logged, not shown."""
        status, kind, code = status_for(exc)
        if not isinstance(exc, PylonError):
            log.error("bug while running a job for the gateway", exc_info=exc)
            return GatewayError(500, "internal error in the gateway (see its log)", kind=kind, code=code)
        message, hint = exc.parts()
        if isinstance(exc, PublishError) and exc.too_large:  # the relays' size limit: retrying cannot help
            return GatewayError(413, f"the request is too large for the relays: {message}; shorten the messages",
                                kind="invalid_request_error", code="request_too_large")
        if isinstance(exc, PaymentRefused) and (exc.reason in _GATEWAY_HINTS or "--" in (hint or "")):
            # its hint names the CLI's flags: say what an HTTP caller can do instead
            return GatewayError(status, f"{message}; {_GATEWAY_HINTS.get(exc.reason, _OPERATOR_HINT)}",
                                kind=kind, code=code)
        return GatewayError(status, str(exc), kind=kind, code=code)

    async def _read(self, request: web.Request, model: type) -> Any:
        raw = await request.read()
        try:
            return parse_body(model, raw)
        except RequestInvalid as exc:
            raise GatewayError(400, str(exc), kind="invalid_request_error", param=exc.param) from None

    # ------------------------------------------------------------------ endpoints
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body: ChatCompletionRequest = await self._read(request, ChatCompletionRequest)
        routing = self._routing(request, body.provider)
        await self._check_model(body.model, routing["provider"])
        try:
            messages = body.chat_messages()
        except RequestInvalid as exc:
            raise GatewayError(400, str(exc), kind="invalid_request_error", param=exc.param) from None
        params = {k: v for k, v in body.job_params().items() if v is not None}
        if body.tools:
            params["tools"] = body.tools
            if body.tool_choice is not None:
                params["tool_choice"] = body.tool_choice
            if routing["provider"] is None:
                routing["provider"] = await self._tool_provider(body.model, params.get("max_tokens"))
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        model = body.model or "pylon"
        if body.stream:
            return await self._stream_chat(request, completion_id, model, [messages] * body.n, params, routing,
                                           include_usage=body.include_usage)
        outcomes = await self._ask_all([messages] * body.n, params, routing)
        return web.json_response(chat_completion(completion_id, model, outcomes))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body: CompletionRequest = await self._read(request, CompletionRequest)
        routing = self._routing(request, body.provider)
        await self._check_model(body.model, routing["provider"])
        try:
            prompts = [p for p in body.prompts() for _ in range(body.n)]
        except RequestInvalid as exc:
            raise GatewayError(400, str(exc), kind="invalid_request_error", param=exc.param) from None
        if body.stream:
            raise GatewayError(400, "stream is supported on /v1/chat/completions only", kind="invalid_request_error",
                               param="stream")
        params = {k: v for k, v in body.job_params().items() if v is not None}
        outcomes = await self._ask_all(prompts, params, routing)
        completion_id = f"cmpl-{secrets.token_hex(12)}"
        return web.json_response(text_completion(completion_id, body.model or "pylon", outcomes))

    async def _stream_chat(self, request: web.Request, completion_id: str, model: str, prompts: list[Any],
                           params: dict[str, Any], routing: dict[str, Any], *, include_usage: bool
                           ) -> web.StreamResponse:
        """SSE in OpenAI's chunk shape; the HTTP status waits for the first piece of text,
        so a refused quote or an absent provider is still a proper 402/503 JSON error."""
        queue: asyncio.Queue[tuple[int, str | None, BaseException | None]] = asyncio.Queue()
        streams = [self.client.stream(p, **params, **routing, timeout=self.timeout) for p in prompts]

        async def pump(index: int, job: Any) -> None:
            try:
                async for piece in job:
                    queue.put_nowait((index, piece, None))
                queue.put_nowait((index, None, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the writer below
                queue.put_nowait((index, None, exc))

        pumps = [asyncio.ensure_future(pump(i, job)) for i, job in enumerate(streams)]
        response: web.StreamResponse | None = None
        created = int(time.time())
        done = 0
        try:
            while done < len(streams):
                index, piece, error = await queue.get()
                if error is not None:
                    if not isinstance(error, Exception):  # CancelledError & co: not ours to render
                        raise error
                    failure = self._as_gateway_error(error)
                    if response is None:
                        raise failure
                    await response.write(sse(error_body(str(failure), kind=failure.kind, code=failure.code)))
                    break
                if response is None:
                    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                           "Cache-Control": "no-cache"})
                    await response.prepare(request)
                    for i in range(len(streams)):
                        await response.write(sse(chat_chunk(completion_id, model, created,
                                                            {"role": "assistant", "content": ""}, index=i)))
                if piece is None:
                    done += 1
                    outcome = streams[index].outcome
                    await response.write(sse(chat_chunk(
                        completion_id, model, created, {}, finish_reason(outcome), index=index,
                        pylon=pylon_info(outcome))))
                    continue
                await response.write(sse(chat_chunk(completion_id, model, created, {"content": piece},
                                                    index=index)))
            else:
                assert response is not None  # every stream ended with a piece: the first one prepared it
                outcomes = [s.outcome for s in streams]
                self._account(outcomes)
                if include_usage:
                    await response.write(sse(chat_chunk(completion_id, model, created, None,
                                                        usage=usage_of(outcomes))))
            assert response is not None
            await response.write(sse("[DONE]"))
            await response.write_eof()
            return response
        finally:
            for task in pumps:
                task.cancel()
            for job in streams:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await job.aclose()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": self._model_list(await self.live_providers())})

    async def model(self, request: web.Request) -> web.Response:
        wanted = request.match_info["model"]
        for entry in self._model_list(await self.live_providers()):
            if entry["id"] == wanted:
                return web.json_response(entry)
        raise GatewayError(404, f"no live provider serves model {wanted!r}", kind="invalid_request_error",
                           code="model_not_found", param="model")

    @staticmethod
    def _model_list(providers: list[Any]) -> list[dict[str, Any]]:
        """One entry per model: how many providers serve it, context length, cheapest prices."""
        by_model: dict[str, list[Any]] = {}
        for p in providers:
            for m in p.models:
                by_model.setdefault(m, []).append(p)
        data = []
        for name in sorted(by_model):
            serving = by_model[name]
            contexts = [p.context_lengths.get(name) for p in serving if p.context_lengths.get(name)]
            data.append({
                "id": name, "object": "model", "created": min(p.last_seen for p in serving),
                "owned_by": "pylon-swarm", "owners": len(serving),
                "context_length": max(contexts) if contexts else None,
                "pricing": {
                    "msat_per_job": min(p.price_msat for p in serving),
                    "msat_per_1k_tokens": min(p.price_per_1k_tokens_msat for p in serving),
                },
            })
        return data

    async def health(self, request: web.Request) -> web.Response:
        pool = self.client.pool
        relays = pool.status() if pool is not None else {}
        connected = sum(1 for state in relays.values() if state == "connected")
        ok = connected > 0
        body = {"ok": ok, "checks": {"relays": {"ok": ok, "detail": f"{connected}/{len(relays)} connected",
                                                "relays": relays}}}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=render(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
