"""A minimal OpenAI-compatible chat server DOUBLE for the recorder and ChatAdapter tests.

Not a model: it answers every DSPy ChatAdapter prompt with the output fields the
prompt asks for, each value derived deterministically from the prompt's user
message, so that a real `dspy.LM` (DSPy's own lm15 HTTP engine) runs a real DSPy
program against it over real HTTP on 127.0.0.1. It reports token usage like a
server would (whitespace word counts). The shared double in tests/peers replaces
this once it exists; this one stays small on purpose.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")


_TOOL = re.compile(r"\((\d+)\) (\w+)(?:, whose description is <desc>.*?</desc>)?\. It takes arguments (\{.*?\})\.")
_SAMPLE = {"string": "pylon", "integer": 3, "number": 1.5, "boolean": True}


def _react_step(system: str, user: str) -> dict[str, str]:
    """dspy.ReAct: call each listed tool once, in order (arguments filled by type), then finish."""
    tools = [(name, ast.literal_eval(args)) for _, name, args in _TOOL.findall(system) if name != "finish"]
    done = len(set(re.findall(r"observation_(\d+)", user)))
    if done < len(tools):
        name, schema = tools[done]
        args = {k: _SAMPLE.get((v or {}).get("type"), "pylon") for k, v in schema.items()}
        return {"next_thought": f"use {name}", "next_tool_name": name, "next_tool_args": json.dumps(args)}
    return {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": "{}"}


def chat_adapter_reply(messages: list[dict]) -> str:
    """Fill every output field the ChatAdapter asked for with `<field>-<sha8 of the user turn>`
    (a ReAct step calls each tool once, then finishes)."""
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})
    system = next((m.get("content") for m in messages if m.get("role") == "system"), "") or ""
    text = user["content"] if isinstance(user.get("content"), str) else json.dumps(user.get("content"))
    tail = text.rsplit("Respond with the corresponding output fields", 1)
    wanted = [f for f in _FIELD.findall(tail[1])] if len(tail) == 2 else []
    wanted = [f for f in dict.fromkeys(wanted) if f != "completed"] or ["answer"]
    digest = hashlib.sha256(tail[0].encode()).hexdigest()[:8]
    values = {f: f"{f}-{digest}" for f in wanted}
    if "next_tool_name" in wanted:
        values.update(_react_step(system, tail[0]))
    parts = [f"[[ ## {f} ## ]]\n{values[f]}\n" for f in wanted]
    return "\n".join(parts) + "\n[[ ## completed ## ]]"


class ChatDouble:
    """`with ChatDouble() as server: server.base_url` — counts requests it served."""

    def __init__(self, reply: Callable[[list[dict]], str] = chat_adapter_reply):
        self.reply = reply
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "double", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with double._lock:
                    double.requests.append(body)
                text = double.reply(body.get("messages", []))
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                completion_tokens = len(text.split())
                self._send(200, {
                    "id": f"chatcmpl-{len(double.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "double"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "ChatDouble":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
