"""An OpenAI-compatible HTTP server DOUBLE, in process, standard library only.

Why a double beside the real vLLM: to measure Pylon's own overhead with a backend of fixed,
known latency, to script exact replies (DSPy adapter tests), and to inject failures (500s,
hangs, dropped connections) that a real server will not produce on demand. Every contract
test that runs against it also runs against the real vLLM server (tests/backends/).

It speaks HTTP/1.1 with keep-alive on asyncio streams: GET /v1/models, POST
/v1/chat/completions (plain and `stream=true` SSE with `stream_options.include_usage`),
OpenAI-style error bodies. "Tokens" are whitespace-separated words, so max_tokens can be
honoured and usage counted.

Use it in a test via the `openai_double` fixture (runs in its own thread, so sync code such
as DSPy can call it too), in async code as `async with OpenAIDouble() as d`, or from a shell:
`python tests/peers/openai_double.py --port 8001 --latency-ms 20` (prints the base URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(r"\S+\s*")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_BODY = 16 * 1024 * 1024

Reply = Callable[[dict[str, Any]], str]


def _content_text(content: Any) -> str:
    """Text of a message's content (a string or a list of OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_tokens(text: str) -> int:
    """The double's tokenizer: one token per whitespace-separated word."""
    return len(_TOKEN.findall(text))


def sample_from_schema(schema: dict[str, Any]) -> Any:
    """A small value that satisfies a simple JSON schema (objects, arrays, scalars, enums)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_from_schema(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample_from_schema(sub) for name, sub in props.items()}
    if kind == "array":
        return [sample_from_schema(schema.get("items", {"type": "string"}))]
    return {"string": "double", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "double")


def default_reply(request: dict[str, Any]) -> str:
    """Valid JSON when a response_format asks for it, else a sentence echoing the last user turn."""
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return json.dumps(sample_from_schema(schema))
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": "double"})
    last = ""
    for msg in request.get("messages", []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            last = _content_text(msg.get("content"))
    return f"This is the OpenAI double answering the prompt: {last}".strip()


class _Fault:
    """One injected failure, consumed by the next matching request."""

    def __init__(self, kind: str, status: int = 500, message: str = "injected failure") -> None:
        self.kind, self.status, self.message = kind, status, message


class OpenAIDouble:
    """OpenAI-compatible server double with fixed latency, scripted replies and fault injection.

    latency_s: delay before the first byte of every chat answer; token_delay_s: delay between
    streamed tokens; reply: request body -> full answer text; stream_usage=False mimics
    llama.cpp's server (no usage in streams); max_context rejects prompt + max_tokens over it
    with a 400 as vLLM does, and is then reported as `max_model_len` on /v1/models with a
    vLLM-style POST /tokenize (`tokenize_calls` counts them). `requests` records every chat request body;
    `max_in_flight` is the most chat requests it has served at once.
    """

    def __init__(
        self,
        *,
        models: tuple[str, ...] | list[str] = ("double-model",),
        latency_s: float = 0.0,
        token_delay_s: float = 0.0,
        reply: Reply | None = None,
        stream_usage: bool = True,
        max_context: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.models = list(models)
        self.latency_s = latency_s
        self.token_delay_s = token_delay_s
        self.reply: Reply = reply or default_reply
        self.stream_usage = stream_usage
        self.max_context = max_context
        self.host, self.port = host, port
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.tokenize_calls = 0
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- configuration (thread-safe) ----------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.models[0]

    def fail_next(self, n: int = 1, *, status: int = 500, message: str = "injected failure") -> None:
        """The next n chat requests get an OpenAI-style error answer with this status."""
        with self._lock:
            self._faults.extend(_Fault("status", status, message) for _ in range(n))

    def hang_next(self, n: int = 1) -> None:
        """The next n chat requests get no answer at all until the double stops."""
        with self._lock:
            self._faults.extend(_Fault("hang") for _ in range(n))

    def drop_next(self, n: int = 1) -> None:
        """The next n chat requests have their connection closed mid-answer."""
        with self._lock:
            self._faults.extend(_Fault("drop") for _ in range(n))

    def error_in_stream_next(self, n: int = 1, *, message: str = "injected stream error") -> None:
        """The next n streamed answers send one token, then an error event (as vLLM does when
        generation fails after the 200 status went out)."""
        with self._lock:
            self._faults.extend(_Fault("stream_error", 500, message) for _ in range(n))

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> "OpenAIDouble":
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._serve_conn, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "OpenAIDouble":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> "OpenAIDouble":
        """Serve from a background thread with its own event loop (usable from sync code)."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="openai-double", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("openai double did not start in time")
        if errors:
            raise errors[0]
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a double started with start_in_thread and join its thread."""
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None
        self._loop = None

    # --- HTTP -----------------------------------------------------------------------------

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ", 2)
                except ValueError:
                    await self._send_json(writer, 400, _error("malformed request line", 400))
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > _MAX_BODY:
                    await self._send_json(writer, 413, _error("body too large", 413))
                    return
                body = await reader.readexactly(length) if length else b""
                keep = await self._route(method, target.split("?", 1)[0], body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns False when the connection must be closed."""
        path = path.rstrip("/")
        if path in ("/v1/models", "/models"):
            if method != "GET":
                return await self._send_json(writer, 405, _error("method not allowed", 405))
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "openai-double"} for m in self.models]
            if self.max_context is not None:  # as vLLM reports its context length
                for card in data:
                    card["max_model_len"] = self.max_context
            return await self._send_json(writer, 200, {"object": "list", "data": data})
        if path == "/tokenize" and self.max_context is not None:  # vLLM's exact prompt count
            try:
                req = json.loads(body)
                messages = req["messages"]
                count = sum(count_tokens(_content_text(m.get("content"))) for m in messages)
            except (ValueError, KeyError, TypeError, AttributeError):
                return await self._send_json(writer, 400, _error("bad tokenize request", 400))
            self.tokenize_calls += 1
            return await self._send_json(writer, 200, {"count": count, "max_model_len": self.max_context,
                                                       "tokens": []})
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return await self._send_json(writer, 405, _error("method not allowed", 405))
            return await self._chat(body, writer)
        return await self._send_json(writer, 404, _error(f"no route {path}", 404))

    async def _chat(self, body: bytes, writer: asyncio.StreamWriter) -> bool:
        try:
            req = json.loads(body)
        except ValueError:
            return await self._send_json(writer, 400, _error("request body is not JSON", 400))
        if not isinstance(req, dict) or not isinstance(req.get("messages"), list) or not req["messages"]:
            return await self._send_json(writer, 400, _error("'messages' must be a non-empty list", 400))
        self.requests.append(req)
        model = req.get("model")
        if model not in self.models:
            return await self._send_json(writer, 404, _error(f"The model `{model}` does not exist.", 404,
                                                             "NotFoundError"))
        max_tokens = req.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return await self._send_json(writer, 400, _error("max_tokens must be at least 1", 400))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self._take_fault()
            if fault and fault.kind == "hang":
                assert self._stopping is not None
                await self._stopping.wait()
                return False
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if fault and fault.kind == "status":
                return await self._send_json(writer, fault.status, _error(fault.message, fault.status))
            text = self.reply(req)
            tokens = _TOKEN.findall(text)
            finish = "stop"
            if max_tokens is not None and len(tokens) > max_tokens:
                tokens, finish = tokens[:max_tokens], "length"
            prompt_tokens = sum(count_tokens(_content_text(m.get("content")))
                                for m in req["messages"] if isinstance(m, dict))
            if self.max_context is not None and prompt_tokens + (max_tokens or 1) > self.max_context:
                return await self._send_json(writer, 400, _error(
                    f"This model's maximum context length is {self.max_context} tokens. However, your "
                    f"request has {prompt_tokens} input tokens and asks for {max_tokens or 1} output tokens.", 400))
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                     "total_tokens": prompt_tokens + len(tokens)}
            cid = f"chatcmpl-{uuid.uuid4().hex}"
            if req.get("stream"):
                include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
                return await self._stream(writer, cid, model, tokens, finish,
                                          usage if include_usage and self.stream_usage else None,
                                          fault=fault)
            if fault and fault.kind == "drop":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
                await writer.drain()
                return False
            answer = {
                "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "finish_reason": finish}],
                "usage": usage,
            }
            return await self._send_json(writer, 200, answer)
        finally:
            self.in_flight -= 1

    async def _stream(self, writer: asyncio.StreamWriter, cid: str, model: str, tokens: list[str],
                      finish: str, usage: dict[str, int] | None, *, fault: _Fault | None) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                   "model": model, "choices": choices}
            if extra:
                obj.update(extra)
            return _sse(json.dumps(obj))

        writer.write(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        for i, tok in enumerate(tokens):
            if self.token_delay_s and i:
                await asyncio.sleep(self.token_delay_s)
            writer.write(chunk([{"index": 0, "delta": {"content": tok}, "finish_reason": None}]))
            await writer.drain()
            if fault is not None and fault.kind == "drop":
                writer.transport.abort()  # connection lost mid-stream, like a killed server
                return False
            if fault is not None and fault.kind == "stream_error":
                writer.write(_sse(json.dumps(_error(fault.message, fault.status))))
                writer.write(_sse("[DONE]") + b"0\r\n\r\n")
                await writer.drain()
                return True
        writer.write(chunk([{"index": 0, "delta": {}, "finish_reason": finish}]))
        if usage is not None:
            writer.write(chunk([], {"usage": usage}))
        writer.write(_sse("[DONE]"))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, obj: Any) -> bool:
        data = json.dumps(obj).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        writer.write(head + data)
        await writer.drain()
        return True


def _sse(payload: str) -> bytes:
    """One SSE event as one HTTP chunk."""
    data = f"data: {payload}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _error(message: str, code: int, kind: str = "BadRequestError") -> dict[str, Any]:
    """An OpenAI-style error body (the shape vLLM sends)."""
    if code >= 500:
        kind = "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def main(argv: list[str] | None = None) -> None:
    """Serve the double from a shell until SIGTERM/SIGINT; prints the base URL first."""
    ap = argparse.ArgumentParser(description="OpenAI-compatible server double (fixed latency)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--token-delay-ms", type=float, default=0.0)
    ap.add_argument("--model", action="append", help="model id to serve (repeatable)")
    args = ap.parse_args(argv)

    async def serve() -> None:
        double = OpenAIDouble(models=args.model or ["double-model"], latency_s=args.latency_ms / 1000,
                              token_delay_s=args.token_delay_ms / 1000, host=args.host, port=args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with double:
            print(double.base_url, flush=True)
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
