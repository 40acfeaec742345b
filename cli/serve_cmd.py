"""`pylon serve`: a kind-5050 provider in front of an OpenAI-compatible backend (vLLM, ...).

With `--price-msat` and/or `--price-per-1k-tokens-msat` jobs are paid: each gets an invoice
from `--wallet URI` (or PYLON_WALLET; required unless --free or the price is 0) and runs once
it is settled (pylon.provider.payments). `--free` serves everything without payment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Optional

import typer

from cli.common import WalletFileOpt, check_wallet_uri, err_console, fail, handle_errors, run, setup_logging
from cli.serve_control import ServeControl, signal_running
from pylon.provider.drain import drain, shutdown_signals
from cli.defaults import effective
from cli.defaults import load_settings
from pylon.ops.secrets import wallet_from_flags
from pylon.errors import ConfigError

log = logging.getLogger("pylon.serve")


async def _serve(settings: Any, overrides: dict[str, Any] | None = None) -> None:
    from pylon.ops.home_lock import HomeLock

    lock = HomeLock().acquire()  # one `pylon serve` per PYLON_HOME (pylon.ops.home_lock)
    try:
        await _serve_locked(settings, overrides or {})
    finally:
        lock.release()


def parse_workers(value: str | None) -> int | None:
    """--workers N: a whole number from 1 to 64, else one clear line (exit 2)."""
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        fail(f"--workers must be a whole number from 1 to 64 (one process per core), not {value!r}", code=2)
    return n


def _identity() -> Any:
    """The provider's keys, created (and said so, once, on stderr) on the first start."""
    from pylon.home import identity_path
    from pylon.nostr.keys import Keys

    path = identity_path()
    created = not path.exists()
    keys = Keys.load_or_create(path)
    if created:  # said once, on stderr: a new identity is a new provider to customers
        err_console.print(f"created a new identity {keys.npub} in {path} (back it up: it is this provider)",
                          highlight=False)
    return keys


async def _supervise(settings: Any, overrides: dict[str, Any], verbose: bool) -> int:
    """`--workers N` (N > 1): this process holds the home lock and the identity and runs N
    worker processes (pylon.provider.workers); each reads its settings from stdin."""
    import json
    import sys

    from pylon.ops.home_lock import HomeLock
    from pylon.provider.workers import Supervisor

    lock = HomeLock().acquire()
    try:
        _identity()  # before the workers: they must all load the same one
        payload = json.dumps({"overrides": overrides, "verbose": verbose, "count": settings.workers}).encode()
        from pylon.provider.workers import WATCHDOG_S

        # PYLON_WORKER_WATCHDOG_S: tests shorten the hung-worker watchdog (not a setting)
        watchdog_s = float(os.environ.get("PYLON_WORKER_WATCHDOG_S") or WATCHDOG_S)
        supervisor = Supervisor(settings.workers, [sys.executable, "-m", "cli.serve_worker"], payload,
                                watchdog_s=watchdog_s)
        log.info("starting %d workers", settings.workers)
        return await supervisor.run()
    finally:
        lock.release()


async def _serve_locked(settings: Any, overrides: dict[str, Any], worker: tuple[int, int] | None = None) -> None:
    """One provider process: the only one (`pylon serve`), or worker `worker` = (slot, count)
    of `pylon serve --workers N` (cli.serve_worker), which holds no lock of its own."""
    from pylon.provider.backends import OpenAIBackend
    from pylon.provider.provider import Provider

    entries = settings.model_entries  # [[models]]: several models on several backends (pylon.provider.backends.router)
    priced = settings.price_msat > 0 or settings.price_per_1k_tokens_msat > 0 or any(
        (e.price_msat or 0) > 0 or (e.price_per_1k_tokens_msat or 0) > 0 for e in entries)
    free = settings.free or not priced
    if not free and not settings.wallet:  # before anything is created or said
        raise ConfigError("a price needs a wallet to invoice with: pass --wallet URI (or --free)")
    check_wallet_uri(settings.wallet)  # a typo'd scheme is exit 2 now, not a relay wait first
    keys = _identity()
    wallet = None
    if not free:
        from wallet import connect_wallet

        wallet = await connect_wallet(settings.wallet)
    backend: Any = OpenAIBackend(settings.backend, api_key=settings.backend_api_key)
    router = None
    if entries:
        from pylon.provider.backends.router import ModelRoute, ModelRouter

        shared: dict[tuple[str, str | None], OpenAIBackend] = {}
        routes = []
        for e in entries:
            key = (e.backend or settings.backend, e.backend_api_key or settings.backend_api_key)
            if key not in shared:
                shared[key] = backend if key == (settings.backend, settings.backend_api_key) else \
                    OpenAIBackend(key[0], api_key=key[1])
            routes.append(ModelRoute(e.name, shared[key], e.max_concurrency, e.price_msat, e.price_per_1k_tokens_msat))
        backend = router = ModelRouter(routes)
    from pylon.ops.metrics import ProviderMetrics

    metrics = ProviderMetrics() if settings.metrics_port is not None else None
    provider = Provider(
        settings.relays, backend, keys=keys, models=None if router else (settings.model_names or None),
        concurrency=settings.concurrency,
        max_tokens_cap=settings.max_tokens_cap, price_msat=settings.price_msat,
        price_per_1k_tokens_msat=settings.price_per_1k_tokens_msat, wallet=wallet, free=free, metrics=metrics,
        partial_interval_s=settings.partial_interval_ms / 1000, tools=settings.tools, name=settings.provider_name,
    )
    from pylon.provider.identity import build_profile, clean_profile

    if settings.provider_allow or settings.provider_deny:
        from pylon.provider.access import CustomerAccess

        provider.access = CustomerAccess(settings.provider_allow, settings.provider_deny)
    metrics_port = settings.metrics_port
    if worker is not None:  # the claim hook: jobs are claimed for (and resumed by) this worker
        from pylon.provider.claims import worker_id
        from pylon.provider.workers import PreferredIntake

        provider.worker_id = worker_id(worker[0])
        provider.intake_gate = PreferredIntake(provider, worker[0], worker[1])  # before the subscription opens
        if metrics_port:  # worker k serves /metrics on the port + k
            metrics_port += worker[0]
    provider.profile = clean_profile({"about": settings.provider_about, "picture": settings.provider_picture,
                                      "lud16": settings.provider_lud16})
    stop, force = shutdown_signals()
    if router is not None:  # per-model quotes; the announced price is the highest, so no bid falls short
        provider.model_prices = router.prices(settings.price_msat, settings.price_per_1k_tokens_msat)
        if not free:
            provider.price_msat = max(p for p, _ in provider.model_prices.values())
            provider.price_per_1k_tokens_msat = max(k for _, k in provider.model_prices.values())
    current = [settings]

    async def reload() -> None:  # SIGHUP: config.toml and PYLON_* again, flags still win (pylon.ops.reload)
        from pylon.ops.reload import reload_provider

        try:
            new = load_settings(overrides)
        except ConfigError as exc:
            log.error("reload refused, the running settings stay: %s", exc)
            return
        await reload_provider(provider, current[0], new)
        current[0] = new

    control = ServeControl(provider, reload=reload)
    control.install()
    monitor = None
    try:
        if metrics_port is not None:  # before anything is announced: a busy port is one line
            from pylon.ops.health import serve_monitor

            monitor = serve_monitor(provider, host=settings.metrics_host, port=metrics_port)
            await monitor.start()
            log.info("metrics and health on %s", monitor.url)
        from pylon.provider.workers import signal_ready, worker_duties

        duties = worker_duties(provider, parent_pid=os.getppid()) if worker else contextlib.nullcontext()
        async with provider.running(), duties:
            signal_ready()
            tag = f" [worker {worker[0] + 1}/{worker[1]}]" if worker else ""
            price = ("free" if free else f"{settings.price_msat} msat per job + "
                     f"{settings.price_per_1k_tokens_msat} msat per 1k max_tokens")
            if settings.log_format == "json":  # stdout stays JSON only: one object per line
                import json

                print(json.dumps({"event": "serving", "npub": keys.npub, "relays": list(settings.relays),
                                  "backend": backend.base_url, "models": provider.served_models, "free": free,
                                  "price_msat": provider.price_msat, "price_per_1k_tokens_msat":
                                  provider.price_per_1k_tokens_msat, "worker": worker[0] if worker else None}),
                      flush=True)
            else:
                print(f"serving as {keys.npub} on {', '.join(settings.relays)} "
                      f"(backend {backend.base_url}, models {', '.join(provider.served_models) or '?'}, {price}){tag}",
                      flush=True)
            first = worker is None or worker[0] == 0  # one kind-0 profile, not one per worker
            if first and (provider.profile or settings.provider_name != "Pylon provider"):  # only what the operator set:
                try:  # an imported personal key keeps its own kind-0 profile otherwise
                    assert provider.pool is not None
                    await provider.pool.publish(build_profile(keys, settings.provider_name, provider.profile))
                except Exception as exc:
                    log.warning("kind-0 profile not published: %s", exc)
            await stop.wait()
            # graceful drain (pylon.provider.drain): no new jobs, announcement withdrawn, paid
            # and running jobs finished within --drain-timeout; a second signal stops at once
            await drain(provider, timeout_s=current[0].drain_timeout_s, force=force)
            log.info("stopping provider (unfinished jobs resume on the next start)")
    finally:
        control.uninstall()
        if monitor is not None:
            await monitor.close()
        await backend.aclose()
        if wallet is not None:
            await wallet.aclose()


def _control(action: str) -> None:
    """`pylon serve pause|resume|reload|status`: signal the running provider (cli.serve_control)."""
    from pylon.ops.home_lock import holder_pid

    if action == "status":  # exit 1 when none runs, so `pylon serve status && …` can be scripted
        pid = holder_pid()
        print(f"pylon serve running (pid {pid})" if pid else "no pylon serve running on this PYLON_HOME")
        if not pid:
            raise typer.Exit(1)
        return
    pid = signal_running(action)
    print(f"sent {action} to pylon serve (pid {pid})")


@handle_errors
def serve(
    action: Optional[str] = typer.Argument(None, metavar="[pause|resume|reload|status]",
                                           help="Control the pylon serve running on this PYLON_HOME instead."),
    relay: Optional[list[str]] = typer.Option(None, "--relay", "-r", metavar="URL",
                                              help=f"Relay URL, repeatable [default: {effective('relays')}]."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", metavar="URL",
                                          help="OpenAI-compatible base URL: vLLM, llama.cpp, Ollama, SGLang "
                                          f"[default: {effective('backend')}]."),
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", help="Model to serve (repeatable; "
                                              "default: the backend's /v1/models)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", min=1, help="Jobs at once (default 32)."),
    price_msat: Optional[int] = typer.Option(None, "--price-msat", min=0, help="Price per job in msat."),
    price_per_1k: Optional[int] = typer.Option(None, "--price-per-1k-tokens-msat", min=0,
                                               help="Price per 1000 max_tokens in msat."),
    max_tokens_cap: Optional[int] = typer.Option(
        None, "--max-tokens-cap", min=1, metavar="N",
        help="Most tokens per job; also capped to what the model's context leaves after the prompt "
        f"[default: {effective('max_tokens_cap')}]."),
    free: bool = typer.Option(False, "--free", help="Serve without payment whatever the price."),
    wallet: Optional[str] = typer.Option(None, "--wallet", help="Wallet URI to invoice with (or PYLON_WALLET)."),
    wallet_file: Optional[Path] = WalletFileOpt,
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535,
                                               help="Serve /metrics and /health on this port."),
    metrics_host: Optional[str] = typer.Option(None, "--metrics-host",
                                               help="Address for --metrics-port (default 127.0.0.1)."),
    partial_interval_ms: Optional[int] = typer.Option(
        None, "--partial-interval-ms", min=0, max=60_000,
        help="Streaming: send the first token at once, then the new text every N ms (default 50; 0: every token)."),
    tools: bool = typer.Option(False, "--tools", help="Announce tool support and pass OpenAI `tools` to the "
                               "backend (vLLM needs --enable-auto-tool-choice --tool-call-parser …)."),
    workers: Optional[str] = typer.Option(
        None, "--workers", metavar="N",
        help="Run N provider processes (one per core) under this identity; they share the jobs and the "
        "job store, and one that dies is restarted with its jobs taken over (default 1)."),
    drain_timeout: Optional[float] = typer.Option(
        None, "--drain-timeout", min=0, metavar="SECONDS",
        help="On SIGTERM/Ctrl-C: stop taking jobs and finish paid ones for up to this long (default 30)."),
    log_format: Optional[str] = typer.Option(None, "--log-format", help="text or json."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Serve kind-5050 jobs from an OpenAI-compatible backend until Ctrl-C (which drains first)."""
    if action is not None:
        _control(action)
        return
    if free and ((price_msat or 0) > 0 or (price_per_1k or 0) > 0):  # a price from config.toml is what --free overrides
        raise ConfigError("give --free or a price (--price-msat, --price-per-1k-tokens-msat), not both",
                          hint="--free serves without payment whatever price the configuration sets")
    overrides: dict[str, Any] = {
        "relays": relay, "backend": backend, "models": model, "concurrency": concurrency,
        "price_msat": price_msat, "price_per_1k_tokens_msat": price_per_1k, "max_tokens_cap": max_tokens_cap,
        "free": True if free else None, "wallet": wallet_from_flags(wallet, wallet_file), "metrics_port": metrics_port, "metrics_host": metrics_host,
        "log_format": log_format, "partial_interval_ms": partial_interval_ms,
        "drain_timeout_s": drain_timeout, "tools": True if tools else None, "workers": parse_workers(workers),
    }
    settings = load_settings(overrides)
    setup_logging(verbose, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.workers > 1:  # pylon.provider.workers: a supervisor and N worker processes
        code = run(_supervise(settings, overrides, verbose))
        if code:
            raise typer.Exit(code)
        return
    run(_serve(settings, overrides))
