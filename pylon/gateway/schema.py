"""OpenAI request bodies, validated: what the gateway accepts and how it maps to a job.

The gateway speaks OpenAI's HTTP API; a job speaks NIP-90 (pylon.jobs.nip90). These pydantic
models are the boundary: they accept what OpenAI's clients send (including fields we don't
use, which are ignored), check every parameter against the ranges OpenAI documents, and
turn a request into the keyword arguments of `PylonClient.ask()`.

Pylon-specific routing: a request may pin a provider or cap its price, by header
(`X-Pylon-Provider`, `X-Pylon-Max-Msat`) or by an OpenRouter-like `provider` object in the
body: `{"provider": {"only": ["npub1…"], "ignore": ["npub1…"], "max_msat": 5000}}`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "ProviderPrefs",
    "RequestInvalid",
    "parse_body",
    "text_of",
]

MAX_N = 8  # jobs one request may fan out to


class RequestInvalid(ValueError):
    """A request body the gateway refuses (HTTP 400), with the offending parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ProviderPrefs(BaseModel):
    """The body's `provider` object (OpenRouter's spelling where it has one)."""

    model_config = ConfigDict(extra="ignore")

    only: list[str] = Field(default_factory=list, max_length=16)
    ignore: list[str] = Field(default_factory=list, max_length=64)
    max_msat: int | None = Field(default=None, ge=0)
    # OpenRouter's sort (price / latency / throughput) or Pylon's route names
    sort: Literal["price", "latency", "throughput", "cheapest", "fastest", "best"] | None = None

    @property
    def route(self) -> str | None:
        """The customer side's routing policy for this sort (pylon.customer.offers)."""
        return {"price": "cheapest", "latency": "fastest", "throughput": "fastest"}.get(self.sort or "", self.sort)


class _Common(BaseModel):
    """Fields chat and text completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    provider: ProviderPrefs | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def job_params(self) -> dict[str, Any]:
        """The job parameters (`PylonClient.ask` keywords) this request asks for."""
        return {
            "model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "frequency_penalty": self.frequency_penalty, "stop": self.stop_list,
            "seed": self.seed,
        }


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string, or the text parts of a content array joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str):
            parts.append(part["text"])
        else:
            raise RequestInvalid(f"content part of type {part.get('type')!r} is not supported (text only)",
                                 "messages")
    return "".join(parts)


class ChatCompletionRequest(_Common):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        kind = value.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError("response_format.type must be text, json_object or json_schema")
        if kind == "json_schema" and not isinstance(value.get("json_schema"), dict):
            raise ValueError("response_format json_schema needs a json_schema object")
        return value

    def chat_messages(self) -> list[dict[str, str]]:
        """Messages in the job's wire shape (role + text); tool turns are kept as text."""
        out: list[dict[str, str]] = []
        for msg in self.messages:
            role = "system" if msg.role == "developer" else msg.role
            text = text_of(msg.content)
            if msg.role == "assistant" and msg.tool_calls and not text:
                text = json.dumps(msg.tool_calls, separators=(",", ":"))
            out.append({"role": role, "content": text})
        if not any(m["content"].strip() for m in out):  # refused here, not by a provider (a refused job)
            raise RequestInvalid("messages have no text: every message's content is empty", "messages")
        return out

    def job_params(self) -> dict[str, Any]:
        params = super().job_params()
        params["max_tokens"] = self.max_completion_tokens or self.max_tokens
        if self.response_format is not None and self.response_format.get("type") != "text":
            params["response_format"] = self.response_format
        return params


class CompletionRequest(_Common):
    """`POST /v1/completions` (legacy text completions): a prompt in, text out."""

    prompt: str | list[str] = Field(max_length=MAX_N)
    echo: bool = False
    suffix: str | None = None

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts or not any(p.strip() for p in prompts):
            raise RequestInvalid("prompt must not be empty", "prompt")
        if len(prompts) * self.n > MAX_N:
            raise RequestInvalid(f"at most {MAX_N} completions per request (prompts x n)", "n")
        return prompts


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    """Parse and validate a JSON body; any problem becomes one RequestInvalid naming the field."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestInvalid(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise RequestInvalid(f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param) from None
