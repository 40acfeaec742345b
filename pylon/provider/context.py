"""Fitting a job's max_tokens into the model's context window (pure, no I/O).

Why: a backend refuses a request whose prompt + max_tokens exceeds its context length
(vLLM: "max_tokens=4096 cannot be greater than max_model_len=512"). A provider whose
`--max-tokens-cap` is larger than a small model's context would then fail every job that
names no max_tokens. So the provider caps each job's max_tokens to what is left of the
context after the prompt, and refuses, with a clear reason, a prompt that leaves no room.

The prompt's length is first bounded from above without a tokenizer: every token of a
byte-level tokenizer covers at least one byte, so the UTF-8 length of the messages plus a
margin per message for the chat template's role markers bounds it. Only when that bound is
too coarse to fit the job does the provider ask the backend for the exact count.
"""

from __future__ import annotations

from typing import Any

from pylon.jobs.pricing import capped_max_tokens

TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators of a chat template
TEMPLATE_TOKENS_FIXED = 16  # begin-of-text, generation prompt


def message_text(content: Any) -> str:
    """The text of one message's content (a string or a list of OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_tokens_upper_bound(messages: list[dict[str, Any]]) -> int:
    """A number of tokens the prompt cannot exceed (bytes + chat-template margin)."""
    size = sum(len(message_text(m.get("content")).encode("utf-8")) + len(str(m.get("role", "")))
               for m in messages if isinstance(m, dict))
    return size + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_FIXED


def wanted_max_tokens(requested: int | None, cap: int) -> int:
    """The job's max_tokens before the context is considered: the request's, at most `cap`
    (the cap itself when the request names none). The pricing rule's own cap, so the provider
    runs and quotes exactly what a customer computes from the announcement."""
    return capped_max_tokens(requested, cap)


def fit_max_tokens(wanted: int, context_length: int | None, prompt_tokens: int) -> int:
    """max_tokens that keeps prompt + max_tokens within the context; <= 0 means no room.

    `context_length` None (the backend did not say) leaves `wanted` as it is."""
    if context_length is None:
        return wanted
    return min(wanted, context_length - prompt_tokens)


def no_room_reason(model: str, context_length: int, prompt_tokens: int, exact: bool) -> str:
    """The error a customer reads when the prompt alone fills the model's context."""
    size = f"{prompt_tokens} tokens" if exact else f"up to {prompt_tokens} tokens"
    return (f"prompt too long: it is {size} and model {model}'s context is {context_length} tokens, "
            f"leaving no room for an answer; shorten the prompt or ask a model with a larger context")
