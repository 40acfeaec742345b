"""`/health` and `/metrics` over a tiny asyncio HTTP server, for serve and relay.

Why not aiohttp or prometheus_client's threaded server: the provider and relay are asyncio
processes already; a 100-line stream server in the same loop can run async health checks
(backend, relays, wallet) directly, adds no dependency, and stops with the process.

`/health` answers JSON `{"ok": bool, "checks": {name: {"ok": bool, "detail": str}}}` with
HTTP 200 when every check passes and 503 otherwise, so a Docker HEALTHCHECK or a load
balancer can use the status code alone. `/metrics` is the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import Wallet

from pylon.errors import listen_error
from pylon.ops.metrics import CONTENT_TYPE_LATEST, render

log = logging.getLogger(__name__)

_MAX_HEADER_BYTES = 16 * 1024
_READ_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str = ""


Check = Callable[[], Awaitable[CheckResult]]


class Health:
    """Named async checks, each bounded by a timeout, run concurrently on every /health."""

    def __init__(self, checks: Mapping[str, Check] | None = None, *, timeout: float = 5.0) -> None:
        self._checks: dict[str, Check] = dict(checks or {})
        self.timeout = timeout

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def _run_one(self, check: Check) -> CheckResult:
        try:
            return await asyncio.wait_for(check(), self.timeout)
        except asyncio.TimeoutError:
            return CheckResult(False, f"no answer within {self.timeout:g} s")
        except Exception as exc:  # a check that raises is a failed check, not a 500
            return CheckResult(False, f"{type(exc).__name__}: {exc}")

    async def report(self) -> dict[str, Any]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_one(self._checks[n]) for n in names))
        checks = {n: {"ok": r.ok, "detail": r.detail} for n, r in zip(names, results)}
        return {"ok": all(r.ok for r in results), "checks": checks}


# ------------------------------------------------------------------- ready-made checks
def backend_check(backend: Any) -> Check:
    """Reachability of an OpenAI-compatible backend through its `health()` (BackendHealth)."""

    async def check() -> CheckResult:
        h = await backend.health()
        if getattr(h, "ok", False):
            models = list(getattr(h, "models", []) or [])
            latency = getattr(h, "latency_ms", None)
            extra = f" in {latency:.0f} ms" if isinstance(latency, (int, float)) else ""
            return CheckResult(True, f"{len(models)} model(s){extra}")
        return CheckResult(False, str(getattr(h, "error", None) or "backend not healthy"))

    return check


def relays_check(status: Callable[[], Mapping[str, str]], *, min_connected: int = 1) -> Check:
    """At least `min_connected` relays connected, from e.g. `RelayPool.status()`."""

    async def check() -> CheckResult:
        states = dict(status())
        up = sorted(u for u, s in states.items() if s == "connected")
        down = sorted(u for u, s in states.items() if s != "connected")
        detail = f"{len(up)}/{len(states)} connected"
        if down:
            detail += "; not connected: " + ", ".join(down)
        return CheckResult(len(up) >= min_connected, detail)

    return check


WALLET_CHECK_TTL_S = 60.0
_PROBE_HASH = "00" * 32  # no invoice has it: a healthy wallet says "not found"


async def probe_wallet(wallet: Wallet) -> str:
    """Ask the wallet about an invoice that does not exist: the call a provider needs anyway
    (lookup_invoice), allowed to a receive-only NWC connection, which may not ask for its
    balance. Any answer, "not found" included, means it is reachable and accepts us; raises
    the wallet's error when it is unreachable, times out or refuses our credentials."""
    from wallet.errors import Unauthorized, WalletError, WalletTimeout, WalletUnreachable

    try:
        await wallet.lookup_invoice(_PROBE_HASH)
    except (Unauthorized, WalletUnreachable, WalletTimeout):
        raise
    except WalletError as exc:  # not found, not implemented...: it answered
        return f"wallet answered ({type(exc).__name__})"
    return "wallet answered"


def wallet_check(wallet: Wallet, *, ttl_s: float = WALLET_CHECK_TTL_S) -> Check:
    """The wallet answers (`probe_wallet`), asked at most once per `ttl_s`: health probes come
    every few seconds and must not turn into a stream of wallet requests."""
    last: list[Any] = []  # [monotonic time, CheckResult]

    async def check() -> CheckResult:
        now = asyncio.get_running_loop().time()
        if last and now - last[0] < ttl_s:
            return last[1]
        try:
            result = CheckResult(True, await probe_wallet(wallet))
        except Exception as exc:
            result = CheckResult(False, f"{type(exc).__name__}: {exc}"[:300])
        last[:] = [now, result]
        return result

    return check


# ------------------------------------------------------------------- the HTTP server
class MetricsServer:
    """Serves GET /metrics (a registry) and GET /health (a Health) on host:port.

    Binds to 127.0.0.1 by default: exposing metrics beyond the machine is an explicit choice
    (`--metrics-host 0.0.0.0`, as the docker stack does inside its network).
    """

    def __init__(self, registry: CollectorRegistry | None = None, health: Health | None = None,
                 *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = registry
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> "MetricsServer":
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise listen_error("the metrics server", self.host, self.port, exc, flag="--metrics-port") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on %s (/metrics, /health)", self.url)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "MetricsServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ConnectionError):
                return
            if len(head) > _MAX_HEADER_BYTES:
                await self._send(writer, 431, b"request header too large\n", "text/plain")
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                await self._send(writer, 400, b"bad request\n", "text/plain")
                return
            method, target = parts[0], parts[1]
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await self._send(writer, 405, b"method not allowed\n", "text/plain", head_only=False,
                                 extra={"Allow": "GET, HEAD"})
                return
            status, body, ctype = await self._route(path)
            await self._send(writer, status, body, ctype, head_only=(method == "HEAD"))
        except Exception:  # one bad request must not take the server down
            log.exception("metrics server: error while answering a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, path: str) -> tuple[int, bytes, str]:
        if path == "/metrics" and self.registry is not None:
            body = await asyncio.get_running_loop().run_in_executor(None, render, self.registry)
            return 200, body, CONTENT_TYPE_LATEST
        if path == "/livez":  # liveness: the process and its loop answer; nothing else is asked
            return 200, b"ok\n", "text/plain; charset=utf-8"
        if path in ("/health", "/healthz", "/readyz"):  # readiness: backend, relays, wallet
            report = await self.health.report() if self.health is not None else {"ok": True, "checks": {}}
            body = (json.dumps(report, ensure_ascii=False) + "\n").encode()
            return (200 if report["ok"] else 503), body, "application/json"
        if path == "/":
            links = [p for p, on in (("/metrics", self.registry is not None), ("/health", True), ("/livez", True)) if on]
            return 200, ("\n".join(links) + "\n").encode(), "text/plain; charset=utf-8"
        return 404, b"not found\n", "text/plain; charset=utf-8"

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, *,
                    head_only: bool = False, extra: Mapping[str, str] | None = None) -> None:
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   431: "Request Header Fields Too Large", 503: "Service Unavailable"}
        headers = {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Connection": "close",
            "Cache-Control": "no-store",
            **(extra or {}),
        }
        head = f"HTTP/1.1 {status} {reasons.get(status, 'OK')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1") + (b"" if head_only else body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()


# ------------------------------------------------------------------- ready-made servers
def listening_check(host: str, port: int) -> Check:
    """The relay accepts TCP connections on its port (it is up and not wedged in accept)."""

    async def check() -> CheckResult:
        target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        _reader, writer = await asyncio.open_connection(target, port)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return CheckResult(True, f"accepting connections on port {port}")

    return check


def relay_monitor(relay: Any, *, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """/metrics from the relay's stats and /health (port accepting) for `pylon relay`.

        async with relay_monitor(relay, host=metrics_host, port=metrics_port):
            ...
    """
    from pylon.ops.metrics import RelayMetrics

    metrics = RelayMetrics(relay.stats)
    health = Health({"relay": listening_check(relay.host, relay.port)})
    return MetricsServer(metrics.registry, health, host=host, port=port)


def provider_monitor(metrics: Any, *, backend: Any = None, relay_status: Callable[[], Mapping[str, str]] | None = None,
                     wallet: Wallet | None = None, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """/metrics from a ProviderMetrics and /health over backend, relays and wallet for `pylon serve`.
    Parts that are None are not checked (a free provider has no wallet)."""
    health = Health()
    if backend is not None:
        health.add("backend", backend_check(backend))
    if relay_status is not None:
        health.add("relays", relays_check(relay_status))
        metrics.track_relays(relay_status)
    if wallet is not None:
        health.add("wallet", wallet_check(wallet))
    return MetricsServer(metrics.registry, health, host=host, port=port)


def serve_monitor(provider: Any, *, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Everything `pylon serve --metrics-port` needs, from a Provider built with `metrics=`:

        metrics = ProviderMetrics()
        provider = Provider(..., metrics=metrics)
        async with provider.running(), serve_monitor(provider, host=h, port=p):
            await provider.run()

    /health checks the backend, that at least one relay is connected, and the wallet when
    the provider charges (a free provider needs none)."""
    from pylon.ops.metrics import ProviderMetrics

    metrics = provider.metrics if provider.metrics is not None else ProviderMetrics()
    if provider.metrics is None:  # started without metrics: count from now on
        provider.metrics = metrics
    metrics.track_provider(provider)

    def relay_status() -> Mapping[str, str]:
        pool = getattr(provider, "pool", None)
        return pool.status() if pool is not None else {}

    health = Health({"backend": backend_check(provider.backend), "relays": relays_check(relay_status)})
    if provider.wallet is not None and not provider.free:
        health.add("wallet", wallet_check(provider.wallet))
    return MetricsServer(metrics.registry, health, host=host, port=port)
