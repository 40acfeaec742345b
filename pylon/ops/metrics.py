"""Prometheus metrics for `pylon serve` and `pylon relay`, one registry per process object.

Why a registry per object rather than prometheus_client's global one: tests (and a demo that
runs a provider and a relay in one process) create several providers and relays; the global
registry refuses a second metric with the same name. Each `ProviderMetrics` / `RelayMetrics`
owns a `CollectorRegistry`, and `pylon.ops.health.MetricsServer` serves exactly that registry.

Wiring is meant to be a few lines in the owner's code:

    metrics = ProviderMetrics()                      # serve_cmd creates it
    metrics.track_relays(pool.status)                # connection state read at scrape time
    with metrics.job_in_flight():                    # provider, around one job
        ...
        with metrics.time_backend(model):            # around the backend call
            result = await backend.chat(req)
        metrics.job_finished("success", tokens=(p, c))
    metrics.earned(amount_msat)                      # when an invoice settles

For the relay a custom collector reads the relay's own stats object at scrape time, so the
relay's hot path only bumps plain ints (no prometheus calls per message).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "JOB_STATUSES",
    "ProviderMetrics",
    "RelayMetrics",
    "RelayStatsCollector",
    "render",
]

# `*_created` timestamp series double every counter's output and no dashboard uses them.
# (Process-wide switch; Pylon only ever uses its own registries.)
disable_created_metrics()

# Final (and intermediate) job states a provider reports. Anything else is counted as
# "other" so that a typo or a hostile value can never blow up label cardinality.
JOB_STATUSES = frozenset({
    "received", "payment-required", "paid", "processing", "success", "error",
    "cancelled", "expired", "rejected", "other",
})

# Backend latency buckets: vLLM answers range from ~10 ms (tiny prompt, warm) to minutes.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (what /metrics returns)."""
    return generate_latest(registry)


class _RelayStateCollector(Collector):
    """`pylon_provider_relay_connected{relay=...}` read from a status callable at scrape time."""

    def __init__(self, status: Callable[[], Mapping[str, str]]):
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pylon_provider_relay_connected",
            "1 if the provider's connection to this relay is up, else 0",
            labels=["relay"],
        )
        try:
            status = dict(self._status())
        except Exception:  # a scrape must never fail because the pool is mid-shutdown
            status = {}
        for url, state in sorted(status.items()):
            family.add_metric([url], 1.0 if state == "connected" else 0.0)
        yield family


class ProviderMetrics:
    """Counters, gauges and histograms of one provider, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.jobs = Counter("pylon_provider_jobs", "Jobs by status reached", ["status"], registry=reg)
        # settled invoices seen by this process; what was earned (delivered jobs only) is
        # pylon_provider_earned_msat_total{model}, read from the job store (StoreCountersCollector)
        self.earned_msat = Counter("pylon_provider_settled_msat", "Millisats of invoices settled in this process",
                                   registry=reg)
        self.tokens = Counter("pylon_provider_tokens", "Tokens processed", ["type"], registry=reg)
        self.backend_latency = Histogram(
            "pylon_provider_backend_latency_seconds",
            "Time the backend took per job (whole generation)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.backend_errors = Counter(
            "pylon_provider_backend_errors", "Backend calls that failed", ["model"], registry=reg
        )
        self.in_flight = Gauge("pylon_provider_jobs_in_flight", "Jobs currently being worked on", registry=reg)
        self.job_duration = Histogram(
            "pylon_provider_job_duration_seconds", "End to end: request seen to result published (or failure)",
            ["outcome"], buckets=_LATENCY_BUCKETS, registry=reg)
        self.queue_wait = Histogram(
            "pylon_provider_queue_wait_seconds", "Ready to run (paid, or quoted when free) to processing",
            buckets=_LATENCY_BUCKETS, registry=reg)
        self.payment_wait = Histogram(
            "pylon_provider_payment_wait_seconds", "payment-required sent to invoice settled",
            buckets=_LATENCY_BUCKETS, registry=reg)
        self.ttft = Histogram(
            "pylon_provider_time_to_first_token_seconds", "Backend call started to its first text",
            ["model"], buckets=_LATENCY_BUCKETS, registry=reg)
        self._stages = JobStages(self)
        for status in ("success", "error"):  # so dashboards see 0 rather than no series
            self.jobs.labels(status=status)
        for kind in ("prompt", "completion"):
            self.tokens.labels(type=kind)
        self._relay_collector: _RelayStateCollector | None = None
        if process:
            _add_process_collectors(reg)

    # -- relay connection state ---------------------------------------------------------
    def track_relays(self, status: Callable[[], Mapping[str, str]]) -> None:
        """Report relay connection state from e.g. `RelayPool.status` (url -> state)."""
        if self._relay_collector is not None:
            self.registry.unregister(self._relay_collector)
        self._relay_collector = _RelayStateCollector(status)
        self.registry.register(self._relay_collector)

    def track_provider(self, provider: Any) -> None:
        """Read a Provider's live state at scrape time: jobs in flight and its pool's relays.

        The provider creates its RelayPool when it starts, so the pool is looked up lazily."""
        self.in_flight.set_function(lambda: float(getattr(provider, "in_flight", 0)))

        def relay_status() -> Mapping[str, str]:
            pool = getattr(provider, "pool", None)
            return pool.status() if pool is not None else {}

        self.track_relays(relay_status)
        self.registry.register(ProviderStateCollector(provider))
        self.registry.register(StoreCountersCollector(lambda: _store_path(provider)))

    # -- jobs -----------------------------------------------------------------------------
    def job_status(self, status: str) -> None:
        """Count one job reaching `status` (NIP-90 feedback names: processing, success, error...)."""
        self.jobs.labels(status=status if status in JOB_STATUSES else "other").inc()

    def job_finished(self, status: str, *, tokens: tuple[int, int] | None = None) -> None:
        """Count a finished job and, when known, its (prompt, completion) token usage."""
        self.job_status(status)
        if tokens is not None:
            prompt, completion = tokens
            if prompt > 0:
                self.tokens.labels(type="prompt").inc(prompt)
            if completion > 0:
                self.tokens.labels(type="completion").inc(completion)

    @contextlib.contextmanager
    def job_in_flight(self) -> Iterator[None]:
        """Hold the in-flight gauge up for the duration of one job, whatever its outcome."""
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def earned(self, amount_msat: int) -> None:
        """Add a settled payment (int millisats; negative or zero amounts are ignored)."""
        if isinstance(amount_msat, int) and amount_msat > 0:
            self.earned_msat.inc(amount_msat)

    def job_event(self, job_id: str, status: str) -> None:
        """A job's state change (the provider's log line): feeds the stage histograms."""
        self._stages.event(job_id, status)

    def first_token(self, model: str, seconds: float) -> None:
        self.ttft.labels(model=model).observe(max(0.0, seconds))

    # -- backend ----------------------------------------------------------------------------
    def observe_backend(self, model: str, seconds: float, *, ok: bool = True) -> None:
        self.backend_latency.labels(model=model).observe(max(0.0, seconds))
        if not ok:
            self.backend_errors.labels(model=model).inc()

    @contextlib.contextmanager
    def time_backend(self, model: str) -> Iterator[None]:
        """Time one backend call; an exception counts as a backend error and propagates."""
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.observe_backend(model, time.perf_counter() - start, ok=ok)

    def render(self) -> bytes:
        return render(self.registry)


class JobStages:
    """Per-job timestamps between state changes -> the stage histograms. Bounded: a job is
    forgotten at its final state, and the oldest are dropped past MAX_TRACKED."""

    MAX_TRACKED = 20_000
    FINAL = {"done": "success", "error": "error", "cancelled": "cancelled"}

    def __init__(self, metrics: "ProviderMetrics") -> None:
        self._m = metrics
        self._jobs: dict[str, dict[str, float]] = {}

    def event(self, job_id: str, status: str) -> None:
        now = time.monotonic()
        marks = self._jobs.get(job_id)
        if marks is None:
            if status in self.FINAL:  # refused at intake: nothing was timed
                return
            if len(self._jobs) >= self.MAX_TRACKED:
                self._jobs.pop(next(iter(self._jobs)))
            marks = self._jobs[job_id] = {"start": now}
        if status in ("seen", "quoted"):  # a free job is not quoted: it waits for a slot from `seen`
            marks["ready"] = now
        elif status == "payment-required":
            marks["invoiced"] = now
            marks.pop("ready", None)
        elif status == "paid":
            if "invoiced" in marks:
                self._m.payment_wait.observe(now - marks["invoiced"])
            marks["ready"] = now
        elif status == "processing":
            if "ready" in marks:
                self._m.queue_wait.observe(now - marks.pop("ready"))
        elif status in self.FINAL:
            self._jobs.pop(job_id, None)
            self._m.job_duration.labels(outcome=self.FINAL[status]).observe(now - marks["start"])


def _store_path(provider: Any) -> Any:
    store = getattr(provider, "store", None)
    return store.path if store is not None else getattr(provider, "db_path", None)


class ProviderStateCollector(Collector):
    """Gauges read from a Provider at scrape time: info (version, npub), prices, backend_up,
    accepting (0 while paused or draining) and announcing."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def collect(self) -> Iterator[Any]:
        from pylon.version import __version__

        p = self._provider
        keys = getattr(p, "keys", None)
        info = InfoMetricFamily("pylon_provider", "The provider's version and identity")
        info.add_metric([], {"version": __version__, "npub": getattr(keys, "npub", "") if keys is not None else ""})
        yield info
        price = GaugeMetricFamily("pylon_provider_price_msat", "Announced price in msat", labels=["kind"])
        free = bool(getattr(p, "free", True))
        price.add_metric(["per_job"], 0.0 if free else float(getattr(p, "price_msat", 0)))
        price.add_metric(["per_1k_tokens"], 0.0 if free else float(getattr(p, "price_per_1k_tokens_msat", 0)))
        yield price
        health = getattr(p, "backend_health", None)
        yield GaugeMetricFamily("pylon_provider_backend_up", "1 if the backend's last health probe succeeded",
                                value=1.0 if health is not None and health.ok else 0.0)
        yield GaugeMetricFamily("pylon_provider_accepting", "1 while taking new jobs (0: paused or draining)",
                                value=1.0 if getattr(p, "accepting", True) else 0.0)
        yield GaugeMetricFamily("pylon_provider_announcing", "1 while an unexpired NIP-89 announcement is out",
                                value=1.0 if getattr(p, "announcing", False) else 0.0)


class StoreCountersCollector(Collector):
    """Lifetime outcome counters kept by the job store's triggers (pylon.provider.counters),
    read with a read-only connection at scrape time. They equal the store's own counts by
    construction and survive restarts and pruning."""

    def __init__(self, path: Callable[[], Any]) -> None:
        self._path = path

    def _read(self) -> dict[tuple[str, str], int]:
        import sqlite3

        from pylon.provider.counters import read

        path = self._path()
        if path is None:
            return {}
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:
            return {}
        try:
            return read(db)
        except sqlite3.Error:
            return {}
        finally:
            db.close()

    def collect(self) -> Iterator[Any]:
        from pylon.provider.counters import SEP

        data = self._read()
        received = CounterMetricFamily("pylon_provider_jobs_received", "Job requests recorded by the job store")
        received.add_metric([], float(data.get(("received", ""), 0)))
        yield received
        finished = CounterMetricFamily(
            "pylon_provider_jobs_finished",
            "Jobs that reached a final state, by outcome (success, error, paid_error, expired, rejected, "
            "cancelled) and model", labels=["outcome", "model"])
        for outcome in ("success", "error"):  # dashboards see 0 rather than no series
            if not any(k[0] == "finished" and k[1].startswith(outcome + SEP) for k in data):
                finished.add_metric([outcome, "-"], 0.0)
        money = {name: CounterMetricFamily(f"pylon_provider_{name}", doc, labels=["model"]) for name, doc in (
            ("earned_msat", "Millisats of paid jobs that were delivered"),
            ("paid_msat", "Millisats of settled invoices (delivered or not)"),
            ("payments", "Invoices settled"))}
        refunded = CounterMetricFamily("pylon_provider_refunded_msat", "Millisats refunded to customers")
        refunded.add_metric([], float(data.get(("refunded_msat", ""), 0)))
        for (name, label), value in sorted(data.items()):
            if name == "finished":
                outcome, _, model = label.partition(SEP)
                finished.add_metric([outcome, model], float(value))
            elif name in ("earned_msat", "paid_msat"):
                money[name].add_metric([label], float(value))
            elif name == "paid":
                money["payments"].add_metric([label], float(value))
        yield finished
        yield from money.values()
        yield refunded


class RelayStatsCollector(Collector):
    """Exports a relay's stats object (nexus_relay.RelayStats) at scrape time.

    The stats object is duck-typed so the relay keeps plain ints on its hot path. It may offer
    `snapshot() -> dict`, be a Mapping, or have plain attributes. Keys read (missing ones are
    simply not exported; callables are called):
      gauges    connections, subscriptions
      counters  connections_total, events_stored (written since start), events_ephemeral,
                events_deleted, events_expired, duplicates, commits
      labelled  messages (client messages received, by type), rejections (by reason prefix)
    """

    GAUGES = (
        ("connections", "connections", "Open client websocket connections"),
        ("subscriptions", "subscriptions", "Open subscriptions (REQs) over all connections"),
    )
    COUNTERS = (
        ("connections_total", "connections_opened", "Client connections opened since start"),
        ("events_stored", "events_stored", "Events written to the database since start"),
        ("events_ephemeral", "events_ephemeral", "Ephemeral events fanned out (never stored)"),
        ("events_deleted", "events_deleted", "Events removed by NIP-09 deletion or replacement"),
        ("events_expired", "events_expired", "Events purged after their NIP-40 expiration"),
        ("duplicates", "duplicates", "Events received that were already stored"),
        ("commits", "commits", "Group-commit transactions"),
    )
    LABELLED = (
        ("messages", "messages", "Client messages received, by type", "type"),
        ("rejections", "rejections", "Refusals (OK false / CLOSED / NOTICE), by machine-readable reason",
         "reason"),
    )

    def __init__(self, stats: Any, prefix: str = "nexus_relay") -> None:
        self._stats = stats
        self._prefix = prefix

    def _read(self) -> dict[str, Any]:
        stats = self._stats
        snapshot = getattr(stats, "snapshot", None)
        if callable(snapshot):
            data = dict(snapshot())
        elif isinstance(stats, Mapping):
            data = dict(stats)
        else:
            data = {k: getattr(stats, k) for k in dir(stats) if not k.startswith("_")}
        return {k: (v() if callable(v) and not isinstance(v, Mapping) else v) for k, v in data.items()}

    @staticmethod
    def _number(value: Any) -> float | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None

    def collect(self) -> Iterator[Any]:
        try:
            data = self._read()
        except Exception:  # never fail a scrape on a relay shutting down
            return
        p = self._prefix
        for key, name, doc in self.GAUGES:
            value = self._number(data.get(key))
            if value is not None:
                yield GaugeMetricFamily(f"{p}_{name}", doc, value=value)
        for key, name, doc in self.COUNTERS:
            value = self._number(data.get(key))
            if value is not None:
                yield CounterMetricFamily(f"{p}_{name}", doc, value=value)
        for key, name, doc, label in self.LABELLED:
            value = data.get(key)
            if not isinstance(value, Mapping):
                continue
            family = CounterMetricFamily(f"{p}_{name}", doc, labels=[label])
            for lab, count in sorted(value.items(), key=lambda kv: str(kv[0])):
                number = self._number(count)
                if number is not None:
                    family.add_metric([str(lab)], number)
            yield family


class RelayMetrics:
    """The relay's registry: its stats object exported through `RelayStatsCollector`."""

    def __init__(self, stats: Any, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = RelayStatsCollector(stats)
        self.registry.register(self.collector)
        if process:
            _add_process_collectors(self.registry)

    def render(self) -> bytes:
        return render(self.registry)


def _add_process_collectors(registry: CollectorRegistry) -> None:
    """Resident memory, CPU, open fds: what an operator looks at first."""
    from prometheus_client import PlatformCollector, ProcessCollector

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
