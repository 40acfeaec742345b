"""One accepted request on its way through the provider (in memory only; the JobStore holds the truth).

Its own module so the provider's components (the payment step) can name it without importing
the Provider.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from pylon.jobs.nip90 import JobRequest


@dataclass(slots=True)
class Job:
    """One accepted request on its way through the provider (in memory only)."""

    request: JobRequest
    model: str
    max_tokens: int
    amount_msat: int = 0
    bolt11: str | None = None
    paid_at: float | None = None  # when its invoice settled (a paid job's retry deadline counts from it)
    started: float = field(default_factory=time.monotonic)
    cancelled_by_customer: bool = False
    task: asyncio.Task | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # the backend's, put on the result
    tool_calls: list[dict[str, Any]] | None = None  # the backend's, put on the result
    key_delivery: bool = False  # pay for the key: run first, seal the result, invoice sha256(key)
    admitted: bool = False  # counted in Admission.pending (until its result is on its way, or it ends)
    # its `processing` feedback, due PROCESSING_NOTICE_S after the claim unless the job is over
    # by then (pylon.provider.provider._say_processing_soon); said: it went out (or a partial did)
    notice: asyncio.TimerHandle | None = None
    at_work: bool = False  # claimed for processing in this process
    said_processing: bool = False

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def customer(self) -> str:
        return self.request.customer
