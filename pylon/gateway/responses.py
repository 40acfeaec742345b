"""OpenAI response shapes: completions, stream chunks, models, and the error object.

Every response carries OpenAI's `usage` and a `pylon` object saying which job answered,
which provider (npub), what was paid and the receipt, so a client that cares about the
swarm can read it and one that doesn't ignores it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pylon.customer.payments import PaidNoResult
from pylon.errors import (
    BackendError, ConfigError, JobCancelled, JobError, JobTimeout, NoProviderAnswered, NostrError, PaymentError,
    PaymentRefused, ProviderError, PylonError, RelayError,
)
from pylon.jobs.nip90 import JobParseError
from pylon.nostr.keys import npub_of

__all__ = ["chat_completion", "chat_chunk", "text_completion", "pylon_info", "usage_of", "error_body",
           "status_for", "sse"]


def pylon_info(outcome: Any) -> dict[str, Any]:
    """The `pylon` object: job id, provider npub, msat paid (with fees), receipt id."""
    receipt = outcome.receipt or {}
    return {
        "job_id": outcome.job_id,
        "provider": npub_of(outcome.provider),
        "paid_msat": int(outcome.paid_msat or 0) + int(outcome.fee_msat or 0),
        "amount_msat": int(outcome.paid_msat or 0),
        "fee_msat": int(outcome.fee_msat or 0),
        "receipt_id": receipt.get("id"),
        "payment_hash": receipt.get("payment_hash"),
    }


def usage_of(outcomes: list[Any]) -> dict[str, int]:
    prompt = sum(int(o.usage.prompt_tokens or 0) for o in outcomes)
    completion = sum(int(o.usage.completion_tokens or 0) for o in outcomes)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(outcome: Any) -> str:
    reason = getattr(outcome, "finish_reason", None)
    return reason if isinstance(reason, str) and reason else "stop"


def _pylon_many(outcomes: list[Any]) -> dict[str, Any]:
    info = pylon_info(outcomes[0])
    if len(outcomes) > 1:
        info["jobs"] = [pylon_info(o) for o in outcomes]
        info["paid_msat"] = sum(j["paid_msat"] for j in info["jobs"])
    return info


def chat_completion(completion_id: str, model: str, outcomes: list[Any]) -> dict[str, Any]:
    choices = []
    for index, outcome in enumerate(outcomes):
        message: dict[str, Any] = {"role": "assistant", "content": outcome.text}
        tool_calls = getattr(outcome, "tool_calls", None)
        if tool_calls:
            message["tool_calls"] = tool_calls
            message["content"] = outcome.text or None
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": "tool_calls" if tool_calls else finish_reason(outcome)})
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": outcomes[0].model or model, "choices": choices, "usage": usage_of(outcomes),
        "pylon": _pylon_many(outcomes),
    }


def text_completion(completion_id: str, model: str, outcomes: list[Any]) -> dict[str, Any]:
    choices = [{"index": i, "text": o.text, "logprobs": None, "finish_reason": finish_reason(o)}
               for i, o in enumerate(outcomes)]
    return {
        "id": completion_id, "object": "text_completion", "created": int(time.time()),
        "model": outcomes[0].model or model, "choices": choices, "usage": usage_of(outcomes),
        "pylon": _pylon_many(outcomes),
    }


def chat_chunk(completion_id: str, model: str, created: int, delta: dict[str, Any] | None,
               finish: str | None = None, *, index: int = 0, usage: dict[str, int] | None = None,
               pylon: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `delta=None` a usage-only chunk (empty choices)."""
    chunk: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                             "model": model}
    chunk["choices"] = [] if delta is None else [
        {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]
    if usage is not None:
        chunk["usage"] = usage
    if pylon is not None:
        chunk["pylon"] = pylon
    return chunk


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


# ------------------------------------------------------------------------------ errors
def error_body(message: str, *, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# The error tree (pylon.errors) to HTTP, most specific first: 402 for money (a refused quote,
# a budget used up), 503 when nobody answered, 504 for a timeout, 502 when the provider
# reported an error, 400 for what the caller sent wrong.
_STATUS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int, str, str], ...] = (
    (PaymentRefused, 402, "payment_required", "payment_refused"),
    (PaidNoResult, 504, "timeout", "job_timeout"),  # paid, no result in time (receipt kept)
    (PaymentError, 402, "payment_required", "payment_error"),
    (NoProviderAnswered, 503, "service_unavailable", "no_provider_answered"),
    (JobTimeout, 504, "timeout", "job_timeout"),
    (ProviderError, 502, "provider_error", "provider_error"),
    (JobCancelled, 499, "cancelled", "job_cancelled"),
    ((ConfigError, NostrError, JobParseError), 400, "invalid_request_error", "invalid_request"),
    (RelayError, 503, "service_unavailable", "relay_unavailable"),
    ((JobError, BackendError), 502, "provider_error", "job_failed"),
    (PylonError, 500, "server_error", "pylon_error"),
)


def status_for(exc: BaseException) -> tuple[int, str, str]:
    """HTTP status, OpenAI error type and code for one of our errors (500 for anything else)."""
    for kinds, status, kind, code in _STATUS:
        if isinstance(exc, kinds):
            return status, kind, code
    return 500, "server_error", "internal_error"
