"""Client for any OpenAI-compatible chat server: vLLM first, and by the same code llama.cpp's
server, Ollama (/v1) and SGLang.

Why one pooled httpx.AsyncClient: a provider runs up to hundreds of jobs at once so that
vLLM's continuous batching is used; a connection per job (or a pool of 10, httpx's default)
would serialise them or pay a TCP handshake each time. Keep-alive connections are reused.

Failures are typed: the server being unreachable, dropping the connection or timing out is
BackendUnavailable; an HTTP error answer is BackendRejected(status, the server's message);
a 2xx answer that is not OpenAI-shaped is BackendProtocolError.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from pylon.backends.errors import BackendProtocolError, BackendRejected, BackendUnavailable
from pylon.backends.models import (
    BackendHealth,
    ChatChunk,
    ChatRequest,
    ChatResult,
    WireCompletion,
    WireModelList,
)
from pylon.backends.sse import iter_sse_data
from pylon.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500


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
        data = await self._request("GET", "/models")
        try:
            return [m.id for m in WireModelList.model_validate(data).data]
        except ValidationError as exc:
            raise BackendProtocolError(f"unexpected /models answer: {str(data)[:200]}") from exc

    async def health(self) -> BackendHealth:
        """Probe the server (GET /models); never raises for a backend failure."""
        t0 = time.perf_counter()
        try:
            models = await self.list_models()
        except BackendError as exc:
            return BackendHealth(ok=False, error=str(exc), latency_ms=(time.perf_counter() - t0) * 1000)
        return BackendHealth(ok=True, models=models, latency_ms=(time.perf_counter() - t0) * 1000)

    async def chat(self, req: ChatRequest) -> ChatResult:
        """A non-streamed chat completion."""
        data = await self._request("POST", "/chat/completions", req.to_body(stream=False))
        try:
            wire = WireCompletion.model_validate(data)
        except ValidationError as exc:
            raise BackendProtocolError(f"unexpected completion answer: {str(data)[:200]}") from exc
        if not wire.choices:
            raise BackendProtocolError(f"completion answer without choices: {str(data)[:200]}")
        choice = wire.choices[0]
        usage = wire.usage
        return ChatResult(
            text=(choice.message.content if choice.message else None) or "",
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            finish_reason=choice.finish_reason,
            model=wire.model or req.model,
        )

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion: text deltas, then one final chunk with empty text that
        carries finish_reason and usage (usage None when the server reports none)."""
        body = req.to_body(stream=True)
        finish: str | None = None
        usage: tuple[int, int] | None = None
        done = False
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise BackendRejected(resp.status_code, error_message(resp.content, resp.reason_phrase))
                async for payload in iter_sse_data(resp.aiter_lines()):
                    if payload.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        data = json.loads(payload)
                    except ValueError as exc:
                        raise BackendProtocolError(f"bad stream event: {payload[:200]!r}") from exc
                    if isinstance(data, dict) and "error" in data and "choices" not in data:
                        raise _stream_error(data)
                    try:
                        wire = WireCompletion.model_validate(data)
                    except ValidationError as exc:
                        raise BackendProtocolError(f"bad stream event: {payload[:200]!r}") from exc
                    if wire.usage and wire.usage.prompt_tokens is not None and wire.usage.completion_tokens is not None:
                        usage = (wire.usage.prompt_tokens, wire.usage.completion_tokens)
                    for choice in wire.choices[:1]:
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        text = choice.delta.content if choice.delta else None
                        if text:
                            yield ChatChunk(text=text)
        except httpx.TransportError as exc:
            raise BackendUnavailable(self._unavailable(exc)) from exc
        if not done and finish is None:
            raise BackendUnavailable(f"backend at {self.base_url} ended the stream before it finished")
        yield ChatChunk(text="", usage=usage, finish_reason=finish)
