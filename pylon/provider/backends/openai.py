"""Client for any OpenAI-compatible chat server: vLLM first, and by the same code llama.cpp's
server, Ollama (/v1) and SGLang.

Why one pooled httpx.AsyncClient: a provider runs up to hundreds of jobs at once so that
vLLM's continuous batching is used; a connection per job (or a pool of 10, httpx's default)
would serialise them or pay a TCP handshake each time. Keep-alive connections are reused.

Why a small HTTP/1.1 client of our own for complete_chat (the per-job call when the customer
does not stream): pylon.provider.backends.http1 -- aiohttp cost ~290 us of CPU per request
there, a pooled asyncio stream ~50 us.

Why aiohttp for stream_chat and httpx for the rest: measured on the
provider's path (32 concurrent streamed requests, 16 tokens, fixed-latency double), httpx costs
~2.7 ms CPU per request and does not keep the connection (it closes any stream left at
`[DONE]`, and when kept alive its pool rescans every idle connection on each request);
aiohttp with its C parser costs ~0.5 ms and reuses connections, which also halves the
backend's own CPU per request (no accept/close) -- CPU a CPU backend shares with us.

Failures are typed: the server being unreachable, dropping the connection or timing out is
BackendUnavailable; an HTTP error answer is BackendRejected(status, the server's message);
a 2xx answer that is not OpenAI-shaped is BackendProtocolError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from pydantic import ValidationError

from pylon.provider.backends.errors import BackendProtocolError, BackendRejected, BackendUnavailable
from pylon.provider.backends.http1 import Http1Error, Http1Pool
from pylon.provider.backends.models import (
    BackendHealth,
    ChatChunk,
    ChatRequest,
    ChatResult,
    WireCompletion,
    WireModel,
    WireModelList,
)
from pylon.provider.backends.sse import SSEDecoder
from pylon.errors import BackendError, ConfigError
from pylon.nostr.jsonwire import dumps, dumps_bytes, loads

log = logging.getLogger(__name__)
# request bodies go out as orjson bytes: aiohttp's json= runs the standard library's dumps (~20 us a job)
_JSON = {"Content-Type": "application/json"}

_MAX_ERROR_CHARS = 500
_TOKENIZE_TIMEOUT_S = 10.0  # then the job falls back to the prompt's upper bound


def normalize_base_url(base_url: str) -> str:
    """`http://host:8000` -> `http://host:8000/v1`; a URL with a path is kept as given.

    Why: `--backend http://127.0.0.1:8000` is the common slip; every server we support
    serves the OpenAI API under /v1, so a bare host means that.
    """
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"backend URL must be http(s)://host[:port][/v1], got {base_url!r}")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


def error_message(body: bytes, fallback: str) -> str:
    """The server's own explanation from an error body, whichever dialect it speaks.

    OpenAI/llama.cpp/SGLang: {"error": {"message": ...}}; Ollama: {"error": "..."};
    older vLLM: {"object": "error", "message": ...}; FastAPI validation: {"detail": [...]}.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    msg: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
        if not msg:
            msg = data.get("message") or data.get("detail")
    if msg is None:
        msg = text or fallback
    if not isinstance(msg, str):
        msg = json.dumps(msg, ensure_ascii=False)
    return msg[:_MAX_ERROR_CHARS]


def _stream_error(payload: dict[str, Any]) -> BackendRejected:
    """An error object sent inside an SSE stream (after the 200 status was already sent)."""
    err = payload.get("error")
    status = 500
    if isinstance(err, dict):
        code = err.get("code")
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
        message = str(err.get("message") or err)
    else:
        message = str(err)
    return BackendRejected(status, message[:_MAX_ERROR_CHARS])


class OpenAIBackend:
    """An OpenAI-compatible server at `base_url` (…/v1), with a pooled keep-alive client."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._timeout = timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None  # created in the loop, on first stream
        self._http1: Http1Pool | None = None  # created in the loop, on the first non-streamed completion
        self._tokenize_unsupported = False
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=60.0,
            ),
        )

    def __repr__(self) -> str:  # never shows the API key
        return f"OpenAIBackend({self.base_url!r})"

    async def __aenter__(self) -> "OpenAIBackend":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._http1 is not None:
            await self._http1.aclose()
            self._http1 = None

    def _stream_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, json_serialize=dumps,  # orjson (pylon.nostr.jsonwire)
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=60.0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(self._timeout, 10.0),
                                              sock_read=self._timeout),
            )
        return self._session

    # --- requests ---------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request returning parsed JSON; transport and HTTP failures become typed errors."""
        try:
            resp = await self._client.request(method, path, json=body)
        except httpx.TransportError as exc:  # connect refused, timeouts, dropped connection
            raise BackendUnavailable(self._unavailable(exc)) from exc
        if resp.status_code >= 400:
            raise BackendRejected(resp.status_code, error_message(resp.content, resp.reason_phrase))
        try:
            return resp.json()
        except ValueError as exc:
            raise BackendProtocolError(f"backend sent non-JSON for {path}: {resp.text[:200]!r}") from exc

    def _unavailable(self, exc: Exception) -> str:
        kind = type(exc).__name__
        detail = str(exc) or kind
        return f"backend at {self.base_url} unavailable ({kind}: {detail})"

    async def list_models(self) -> list[str]:
        """Model ids from GET /models."""
        return [m.id for m in await self._model_cards()]

    async def _model_cards(self) -> list[WireModel]:
        data = await self._request("GET", "/models")
        try:
            return WireModelList.model_validate(data).data
        except ValidationError as exc:
            raise BackendProtocolError(f"unexpected /models answer: {str(data)[:200]}") from exc

    async def health(self) -> BackendHealth:
        """Probe the server (GET /models); never raises for a backend failure.

        The answer also carries each model's context length where the server reports it
        (vLLM's `max_model_len`), so the provider can keep prompt + max_tokens inside it."""
        t0 = time.perf_counter()
        try:
            cards = await self._model_cards()
        except BackendError as exc:
            return BackendHealth(ok=False, error=str(exc), latency_ms=(time.perf_counter() - t0) * 1000)
        return BackendHealth(ok=True, models=[m.id for m in cards],
                             context_lengths={m.id: m.max_model_len for m in cards if m.max_model_len},
                             latency_ms=(time.perf_counter() - t0) * 1000)

    async def count_prompt_tokens(self, model: str, messages: list[dict[str, Any]]) -> int | None:
        """The exact prompt length in tokens (chat template included), or None when the server
        cannot say. Uses vLLM's POST /tokenize (served beside /v1, not under it); a server
        without it is remembered and not asked again. Only called when an estimate is not
        enough to fit a job into the model's context, so it costs nothing on the usual path."""
        if self._tokenize_unsupported:
            return None
        url = self.base_url.removesuffix("/v1") + "/tokenize"
        try:
            resp = await self._client.post(url, json={"model": model, "messages": messages,
                                                      "add_generation_prompt": True},
                                           timeout=_TOKENIZE_TIMEOUT_S)  # a hung server must not hold the job
        except httpx.TransportError:
            return None
        if resp.status_code in (404, 405, 501):
            self._tokenize_unsupported = True
            return None
        if resp.status_code >= 400:
            return None
        try:
            count = resp.json().get("count")
        except (ValueError, AttributeError):
            return None
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None

    async def chat(self, req: ChatRequest) -> ChatResult:
        """A non-streamed chat completion (`complete_chat`, as a ChatResult)."""
        final = await self.complete_chat(req)
        prompt_tokens, completion_tokens = final.usage if final.usage is not None else (None, None)
        return ChatResult(text=final.text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finish_reason=final.finish_reason, model=req.model)

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion: text deltas, then one final chunk with empty text that
        carries finish_reason and usage (usage None when the server reports none)."""
        body = req.to_body(stream=True)
        calls = _ToolCallAssembler() if req.tools else None  # only tool requests pay for a second look
        finish: str | None = None
        usage: tuple[int, int] | None = None
        done = False
        try:
            async with self._stream_session().post(self.base_url + "/chat/completions", data=dumps_bytes(body),
                                                   headers=_JSON) as resp:
                if resp.status >= 400:
                    raise BackendRejected(resp.status, error_message(await resp.read(), resp.reason or ""))
                payloads = _sse_payloads(resp, SSEDecoder())
                async with contextlib.aclosing(payloads):
                    async for payload in payloads:
                        if payload.strip() == b"[DONE]":
                            done = True
                            break
                        data = _decode_stream_event(payload)
                        text, chunk_finish, chunk_usage = _parse_stream_event(data, payload)
                        if calls is not None:
                            calls.feed(data)
                        if chunk_usage is not None:
                            usage = chunk_usage
                        if chunk_finish:
                            finish = chunk_finish
                        if text:
                            yield ChatChunk(text=text)
                if done:
                    await _drain(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:  # refused, dropped, sock_read timeout
            raise BackendUnavailable(self._unavailable(exc)) from exc
        if not done and finish is None:
            raise BackendUnavailable(f"backend at {self.base_url} ended the stream before it finished")
        yield ChatChunk(text="", usage=usage, finish_reason=finish,
                        tool_calls=calls.result() if calls is not None else None)


    async def complete_chat(self, req: ChatRequest) -> ChatChunk:
        """A non-streamed completion over the same keep-alive pool as `stream_chat`, returned
        in the shape of a stream's final chunk (all the text, usage, finish_reason, tool calls).

        Why: a job whose customer reads only the result needs no deltas, and parsing one SSE
        event per token was most of the provider's CPU for a long answer (about 6 us a token,
        2 ms for 300 tokens); one JSON body costs a fraction of that."""
        if self._http1 is None:
            self._http1 = Http1Pool(self.base_url, {**self._headers, **_JSON}, max_connections=self._max_connections,
                                    connect_timeout=min(self._timeout, 10.0), read_timeout=self._timeout)
        try:
            answer = await self._http1.post("/chat/completions", dumps_bytes(req.to_body(stream=False)))
        except (Http1Error, TimeoutError) as exc:  # refused, dropped, malformed, read timeout
            raise BackendUnavailable(self._unavailable(exc)) from exc
        raw = answer.body
        if answer.status >= 400:
            raise BackendRejected(answer.status, error_message(raw, answer.reason))
        try:
            data = _decode_event(raw)
        except ValueError as exc:
            raise BackendProtocolError(f"backend sent non-JSON for /chat/completions: {_shown(raw)!r}") from exc
        return _parse_completion(data, raw)


class _ToolCallAssembler:
    """Streamed `tool_calls` deltas (id and name once, arguments in pieces) -> whole calls."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, data: Any) -> None:
        """One decoded stream event (the same object the text was read from)."""
        for choice in (data.get("choices") or []) if isinstance(data, dict) else []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            for piece in (delta or {}).get("tool_calls") or [] if isinstance(delta, dict) else []:
                if not isinstance(piece, dict):
                    continue
                index = piece.get("index", len(self._calls))
                call = self._calls.setdefault(index if isinstance(index, int) else len(self._calls), {
                    "id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                if isinstance(piece.get("id"), str):
                    call["id"] = piece["id"]
                fn = piece.get("function")
                if isinstance(fn, dict):
                    if isinstance(fn.get("name"), str):
                        call["function"]["name"] += fn["name"]
                    if isinstance(fn.get("arguments"), str):
                        call["function"]["arguments"] += fn["arguments"]

    def result(self) -> list[dict[str, Any]] | None:
        calls = [self._calls[i] for i in sorted(self._calls) if self._calls[i]["function"]["name"]]
        return calls or None


_DRAIN_S = 1.0


async def _sse_payloads(resp: aiohttp.ClientResponse, decoder: SSEDecoder) -> AsyncGenerator[bytes, None]:
    """Every SSE `data:` payload of the body, including one left unterminated at its end."""
    async for raw in resp.content.iter_any():
        for payload in decoder.feed(raw):
            yield payload
    for payload in decoder.close():
        yield payload


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read what follows [DONE] (the chunked terminator, normally already buffered) so the
    keep-alive connection goes back to the pool instead of being closed. Bounded: a server
    that keeps the body open after [DONE] only costs us that connection, as before."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            async for _ in resp.content.iter_any():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def _decode_event(payload: bytes) -> Any:
    try:
        return loads(payload)  # orjson, the standard library for what it refuses (pylon.nostr.jsonwire)
    except UnicodeDecodeError:  # keep the old text decoding's leniency (errors="replace")
        return loads(payload.decode("utf-8", errors="replace"))


def _decode_stream_event(payload: bytes) -> Any:
    """One streamed chunk's JSON, decoded once for the text and the tool calls."""
    try:
        return _decode_event(payload)
    except ValueError as exc:
        raise BackendProtocolError(f"bad stream event: {_shown(payload)!r}") from exc


def _parse_stream_event(data: Any, payload: bytes) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """(text delta, finish_reason, usage) of one decoded streamed chunk (`payload`: its bytes,
    for the error message); typed errors for bad ones.

    Why not always WireCompletion: a pydantic model per token was the largest single cost of
    a streamed job in the provider. Well-typed chunks (all of vLLM's, llama.cpp's, ...) take a
    plain-dict path; anything else goes through the pydantic model exactly as before, so odd
    but acceptable shapes are coerced and bad ones are refused the same way.
    """
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        raise _stream_error(data)
    fast = _fast_event(data)
    if fast is not None:
        return fast
    try:
        wire = WireCompletion.model_validate(data)
    except ValidationError as exc:
        raise BackendProtocolError(f"bad stream event: {_shown(payload)!r}") from exc
    usage = None
    if wire.usage and wire.usage.prompt_tokens is not None and wire.usage.completion_tokens is not None:
        usage = (wire.usage.prompt_tokens, wire.usage.completion_tokens)
    for choice in wire.choices[:1]:
        return (choice.delta.content if choice.delta else None), choice.finish_reason, usage
    return None, None, usage


def _parse_completion(data: Any, raw: bytes) -> ChatChunk:
    """A whole /chat/completions answer as a final chunk; typed errors for bad ones (the same
    plain-dict fast path as stream events, pydantic for anything odd)."""
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        raise _stream_error(data)
    fast = _fast_event(data)
    if fast is not None:
        _, finish, usage = fast
        choices = data["choices"]
        if not choices:
            raise BackendProtocolError(f"completion answer without choices: {_shown(raw)!r}")
        message = choices[0].get("message") or {}
        text = message.get("content") or ""
    else:
        try:
            wire = WireCompletion.model_validate(data)
        except ValidationError as exc:
            raise BackendProtocolError(f"unexpected completion answer: {_shown(raw)!r}") from exc
        if not wire.choices:
            raise BackendProtocolError(f"completion answer without choices: {_shown(raw)!r}")
        choice = wire.choices[0]
        finish = choice.finish_reason
        text = (choice.message.content if choice.message else None) or ""
        usage = None
        if wire.usage and wire.usage.prompt_tokens is not None and wire.usage.completion_tokens is not None:
            usage = (wire.usage.prompt_tokens, wire.usage.completion_tokens)
        message = data["choices"][0].get("message") if isinstance(data["choices"][0], dict) else None
    return ChatChunk(text=text, usage=usage, finish_reason=finish, tool_calls=_whole_tool_calls(message))


def _whole_tool_calls(message: Any) -> list[dict[str, Any]] | None:
    """`message.tool_calls` of a whole answer, in the shape _ToolCallAssembler gives a stream's."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(calls, list):
        return None
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            continue
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):  # a server that sends the arguments as an object
            arguments = "" if arguments is None else dumps(arguments)
        out.append({"id": call.get("id") if isinstance(call.get("id"), str) else "", "type": "function",
                    "function": {"name": fn["name"], "arguments": arguments}})
    return out or None


def _shown(payload: bytes) -> str:
    return payload[:200].decode("utf-8", errors="replace")


_NoneType = type(None)


def _fast_event(data: Any) -> tuple[str | None, str | None, tuple[int, int] | None] | None:
    """The plain-dict reading of a chunk whose every field WireCompletion reads already has
    exactly the declared type; None (use pydantic) otherwise."""
    if type(data) is not dict:
        return None
    if type(data.get("model")) not in (str, _NoneType):
        return None
    choices = data.get("choices", [])
    if type(choices) is not list:
        return None
    usage = None
    u = data.get("usage")
    if u is not None:
        if type(u) is not dict:
            return None
        pt, ct = u.get("prompt_tokens"), u.get("completion_tokens")
        if type(pt) not in (int, _NoneType) or type(ct) not in (int, _NoneType):
            return None
        if pt is not None and ct is not None:
            usage = (pt, ct)
    first: tuple[str | None, str | None, tuple[int, int] | None] | None = None
    for choice in choices:
        if type(choice) is not dict:
            return None
        finish = choice.get("finish_reason")
        if type(finish) not in (str, _NoneType):
            return None
        text = None
        for key in ("message", "delta"):
            m = choice.get(key)
            if m is None:
                continue
            if type(m) is not dict:
                return None
            content = m.get("content")
            if type(content) not in (str, _NoneType):
                return None
            if key == "delta":
                text = content
        if first is None:
            first = (text, finish, usage)
    return first if first is not None else (None, None, usage)
