"""What the provider reports its counters to: a protocol, so the provider does not import
pylon.ops (which sits above it); pylon.ops.metrics.ProviderMetrics implements it."""

from __future__ import annotations

from typing import Protocol


class ProviderMetricsSink(Protocol):
    """Counters and timings of one provider (Prometheus in pylon.ops.metrics)."""

    def job_status(self, status: str) -> None: ...

    def job_finished(self, status: str, *, tokens: tuple[int, int] | None = None) -> None: ...

    def earned(self, amount_msat: int) -> None: ...

    def observe_backend(self, model: str, seconds: float, *, ok: bool = True) -> None: ...

    def first_token(self, model: str, seconds: float) -> None: ...

    def job_event(self, job_id: str, status: str) -> None: ...
