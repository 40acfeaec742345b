"""Pydantic models at the backend boundary: what Pylon asks for and what it gets back.

Requests are validated before they leave (a bad temperature is our caller's bug, not the
server's); responses are parsed leniently (extra fields ignored) because vLLM, llama.cpp,
Ollama and SGLang each add their own fields to the OpenAI shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ChatRequest(BaseModel):
    """One chat completion request; only the fields that are set are sent to the server."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def to_body(self, *, stream: bool) -> dict[str, Any]:
        """The JSON body for /chat/completions: unset parameters are left out entirely.

        top_k is not an OpenAI field but vLLM, llama.cpp and SGLang read it from the body
        (Ollama ignores it), so it goes as a plain extra field.
        """
        body = self.model_dump(exclude_none=True)
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body


class ChatResult(BaseModel):
    """A finished (non-streamed) completion. Token counts are None if the server gave none."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    model: str


class ChatChunk(BaseModel):
    """A streamed piece: a text delta, or the final summary (empty text, finish_reason, usage).

    `usage` is (prompt_tokens, completion_tokens) on the final chunk when the server reports
    it; llama.cpp's server does not in streams, and then it is None (nothing is estimated).
    """

    text: str = ""
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # on the final chunk, assembled from the deltas


class BackendHealth(BaseModel):
    """The result of one health probe (GET /models)."""

    ok: bool
    models: list[str] = Field(default_factory=list)
    # model id -> context length in tokens, for servers that report it (vLLM: max_model_len)
    context_lengths: dict[str, int] = Field(default_factory=dict)
    latency_ms: float | None = None
    error: str | None = None


# --- wire shapes of responses (lenient) ---------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WireUsage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class WireMessage(_Wire):
    content: str | None = None


class WireChoice(_Wire):
    message: WireMessage | None = None
    delta: WireMessage | None = None
    finish_reason: str | None = None


class WireCompletion(_Wire):
    """A /chat/completions response or one streamed chunk of it."""

    model: str | None = None
    choices: list[WireChoice] = Field(default_factory=list)
    usage: WireUsage | None = None


class WireModel(_Wire):
    id: str
    max_model_len: int | None = None  # vLLM: the served context length (prompt + completion)


class WireModelList(_Wire):
    data: list[WireModel]
