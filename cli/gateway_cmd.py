"""`pylon gateway`: serve the swarm as an OpenAI-compatible endpoint on http://HOST:PORT/v1.

The first line printed is the base URL (`--port 0` picks a free port), so scripts and tests
can read it. One client, one set of relay connections and one wallet serve every request;
the per-job cap (`--max-msat`) and the daily budget apply to all of them together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer

from cli.common import RelayOpt, WalletFileOpt, handle_errors, run, setup_logging, stop_on_signals
from cli.defaults import load_settings
from pylon.ops.secrets import wallet_from_flags

log = logging.getLogger("pylon.gateway")


async def _gateway(settings: Any, *, host: str, port: int, api_key: str | None) -> None:
    from pylon.customer.client import PylonClient
    from pylon.gateway import Gateway, GatewayServer, require_safe_bind
    from pylon.jobs.nip89 import discover

    require_safe_bind(host, api_key)  # before any relay or wallet is touched
    wallet = None
    if settings.wallet:
        from wallet import open_wallet

        wallet = open_wallet(settings.wallet)
    try:
        async with PylonClient(settings.relays, wallet=wallet, max_msat=settings.max_msat,
                               daily_budget_msat=settings.daily_budget_msat) as client:
            async def live() -> list[Any]:
                assert client.pool is not None
                return await discover(client.pool, timeout=5.0)

            gateway = Gateway(client, discover=live, api_key=api_key, timeout=settings.timeout_s)
            async with GatewayServer(gateway, host=host, port=port) as server:
                print(server.base_url, flush=True)
                log.info("gateway on %s over %s", server.base_url, ", ".join(settings.relays))
                await stop_on_signals().wait()
    finally:
        if wallet is not None:
            await wallet.aclose()


@handle_errors
def gateway(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (non-loopback needs --api-key)."),
    port: int = typer.Option(8080, "--port", "-p", min=0, max=65535, help="Port (0 picks a free one)."),
    relay: Optional[list[str]] = RelayOpt,
    wallet: Optional[str] = typer.Option(None, "--wallet", help="Wallet URI to pay with (or PYLON_WALLET)."),
    wallet_file: Optional[Path] = WalletFileOpt,
    max_msat: Optional[int] = typer.Option(None, "--max-msat", min=0, help="Most one job may cost, msat."),
    daily_budget_msat: Optional[int] = typer.Option(None, "--daily-budget-msat", min=0,
                                                    help="Most all jobs may cost per UTC day, msat."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="PYLON_GATEWAY_API_KEY",
                                          help="Require `Authorization: Bearer KEY` (or PYLON_GATEWAY_API_KEY)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="Seconds one job may take."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Serve the swarm as an OpenAI-compatible API (chat/completions, completions, models)."""
    settings = load_settings({
        "relays": relay, "wallet": wallet_from_flags(wallet, wallet_file), "max_msat": max_msat, "daily_budget_msat": daily_budget_msat,
        "timeout_s": timeout,
    })
    setup_logging(verbose)
    run(_gateway(settings, host=host, port=port, api_key=api_key))
