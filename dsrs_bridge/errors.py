"""Pylon failures -> lm15's canonical errors, so DSPy retries only what a retry can fix.

DSPy retries lm15 RateLimitError, TimeoutError, ServerError and TransportError
(`dspy.utils.exceptions.is_retryable_lm_error`) and gives up at once on the rest. So:

| what happened                                              | lm15 error (DSPy)                 | retried |
|------------------------------------------------------------|-----------------------------------|---------|
| refusal to pay: above the bid / cap / budget, no wallet,   | BillingError (LMBillingError)     | no      |
| budget used up, a provider's "price is N, above your bid"  |                                   |         |
| paid and no result (a retry would pay again)               | BillingError                      | no      |
| "model … is not served here"                               | UnsupportedModelError (invalid)   | no      |
| backend 4xx, "invalid parameters", "invalid job request"   | InvalidRequestError               | no      |
| provider busy, rate limits                                 | RateLimitError                    | yes     |
| nobody answered / no result in time                        | TimeoutError                      | yes     |
| relay trouble                                              | TransportError                    | yes     |
| backend unavailable, 5xx, other provider errors            | ServerError                       | yes     |

The reason the provider gave is kept in the message. When several providers answered with
errors of different kinds the job is only non-retryable if every one of them was.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

_NOT_SERVED = re.compile(r"is not served here|unknown model|model .* not found", re.I)
_PRICE = re.compile(r"above your bid|price is \d+ msat", re.I)
_BAD_REQUEST = re.compile(r"invalid parameters|invalid job request|HTTP 4(?!29)\d\d|bad request|"
                          r"context length|maximum context|too long", re.I)
_BUSY = re.compile(r"busy|rate.?limit|too many|HTTP 429", re.I)

BILLING, UNSUPPORTED_MODEL, BAD_REQUEST, RATE_LIMIT, SERVER = "billing", "model", "request", "rate", "server"


def classify_reason(reason: str) -> str:
    """One provider's error reason -> the kind of failure (BILLING … SERVER)."""
    if _PRICE.search(reason):
        return BILLING
    if _NOT_SERVED.search(reason):
        return UNSUPPORTED_MODEL
    if _BAD_REQUEST.search(reason):
        return BAD_REQUEST
    if _BUSY.search(reason):
        return RATE_LIMIT
    return SERVER


def _lm15() -> Any:
    from dspy import lm15

    return lm15


def _for_kind(kind: str, message: str) -> BaseException:
    lm15 = _lm15()
    if kind == BILLING:
        return lm15.BillingError(f"not retried: {message}", provider="pylon")
    if kind == UNSUPPORTED_MODEL:
        return lm15.UnsupportedModelError(f"not retried: {message}", provider="pylon")
    if kind == BAD_REQUEST:
        return lm15.InvalidRequestError(f"not retried: {message}", provider="pylon")
    if kind == RATE_LIMIT:
        return lm15.RateLimitError(message, provider="pylon")
    return lm15.ServerError(message, provider="pylon")


def to_lm15_error(exc: BaseException) -> BaseException:
    """A Pylon failure as the lm15 error DSPy maps onto its retry policy (others unchanged)."""
    lm15 = _lm15()
    from pylon.customer.client import JobCancelled, JobTimeout, NoProviderAnswered, ProviderError
    from pylon.customer.payments import PaidNoResult
    from pylon.errors import JobError, PaymentError, RelayError

    message = str(exc)
    if isinstance(exc, PaymentError):
        return lm15.BillingError(f"payment refused, not retried: {message}", provider="pylon")
    if isinstance(exc, PaidNoResult):  # a retry would be a new job, paid again: let the caller decide
        return lm15.BillingError(f"paid without a result, not retried: {message}", provider="pylon")
    if isinstance(exc, JobCancelled):
        return exc
    if isinstance(exc, (NoProviderAnswered, JobTimeout)):
        return lm15.TimeoutError(message, provider="pylon")
    if isinstance(exc, RelayError):
        if "rate-limited" in message or "rate limit" in message.lower():
            return lm15.RateLimitError(message, provider="pylon")
        return lm15.TransportError(message, provider="pylon")
    if isinstance(exc, ProviderError):
        kinds = {classify_reason(r) for r in exc.errors.values()} or {classify_reason(message)}
        return _for_kind(kinds.pop() if len(kinds) == 1 else SERVER, message)
    if isinstance(exc, JobError):
        return _for_kind(classify_reason(message), message)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return lm15.TimeoutError(message or "timed out", provider="pylon")
    return exc
