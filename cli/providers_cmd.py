"""`pylon providers`: who serves kind-5050 jobs on these relays (NIP-89 discovery)."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from cli.common import console, handle_errors, print_json, run
from pylon.ops.config import load_settings


def _ago(ts: int) -> str:
    seconds = max(0, int(time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


async def _discover(relays: list[str], model: Optional[str], timeout: float) -> list:
    from pylon.jobs.nip89 import discover
    from pylon.relay.pool import RelayPool

    async with RelayPool(relays) as pool:
        await pool.wait_connected()
        return await discover(pool, model=model, timeout=timeout)


@handle_errors
def providers(
    relay: Optional[list[str]] = typer.Option(None, "--relay", "-r", help="Relay URL (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only providers announcing this model."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for the relays."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List kind-5050 providers from their NIP-89 announcements (newest per provider)."""
    settings = load_settings({"relays": relay})
    found = run(_discover(settings.relays, model, timeout))
    if as_json:
        print_json([{**p.model_dump(), "npub": p.npub} for p in found])
        return
    if not found:
        console.print("no provider announcements found on " + ", ".join(settings.relays))
        return
    table = Table(title=f"{len(found)} provider(s)")
    for col in ("provider", "name", "models", "msat/job", "msat/1k tok", "max tokens", "encryption", "last seen"):
        table.add_column(col)
    for p in found:
        table.add_row(p.npub[:20] + "…", p.name, ", ".join(p.models) or "?", str(p.price_msat),
                      str(p.price_per_1k_tokens_msat), str(p.max_tokens or "?"), ", ".join(p.encryption) or "-",
                      _ago(p.last_seen))
    console.print(table)
