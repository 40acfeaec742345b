"""`pylon relay`: run the embedded nexus relay until SIGINT/SIGTERM.

The first line on stdout is the relay's ws:// URL (flushed at once), so scripts and tests
can start it with `--port 0` and read where it listens.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.common import fail, handle_errors, setup_logging, stop_on_signals
from pylon.home import db_path as home_db_path

log = logging.getLogger("pylon.relay")


async def _serve(db: Path, host: str, port: int, config, metrics_port: Optional[int] = None,  # noqa: ANN001
                 metrics_host: str = "127.0.0.1") -> None:
    from nexus_relay import running_relay
    from pylon.ops.health import relay_monitor

    stop = stop_on_signals()
    async with running_relay(db, config, host=host, port=port) as relay:
        monitor = relay_monitor(relay, host=metrics_host, port=metrics_port) if metrics_port is not None else None
        if monitor is not None:  # /metrics + /health (ops, issue 6)
            await monitor.start()
        sys.stdout.write(relay.url + "\n")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            if monitor is not None:
                await monitor.close()
        log.info("stopping relay")


@handle_errors
def relay(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(7777, "--port", min=0, max=65535, help="Port to listen on (0 picks a free one)."),
    db: Optional[Path] = typer.Option(None, "--db", help="SQLite database (default PYLON_HOME/relay.sqlite)."),
    auth: bool = typer.Option(False, "--auth", help="Require NIP-42 AUTH before REQ and EVENT."),
    public_url: str = typer.Option("", "--public-url", help="ws(s):// URL clients use (NIP-42 relay tag)."),
    events_per_second: float = typer.Option(1000.0, "--events-per-second", help="Per-connection EVENT rate (0 = no limit)."),
    events_burst: int = typer.Option(5000, "--events-burst", help="Per-connection EVENT burst."),
    no_fsync: bool = typer.Option(False, "--no-fsync", help="Commit without fsync (survives a crash, not a power cut)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535,
                                               help="Serve /metrics and /health on this port."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address for --metrics-port."),
    log_format: str = typer.Option("text", "--log-format", help="Log lines as `text` or `json` (for log shippers)."),
) -> None:
    """Run the embedded Nostr relay; prints its ws:// URL first."""
    from nexus_relay import RelayConfig

    if log_format not in ("text", "json"):
        fail("--log-format must be text or json", 2)
    setup_logging(verbose, log_format)
    if not verbose:  # one line per connection is noise for a relay
        logging.getLogger("websockets").setLevel(logging.WARNING)
    config = RelayConfig(auth_required=auth, public_url=public_url, events_per_second=events_per_second,
                         events_burst=events_burst, fsync=not no_fsync)
    path = db if db is not None else home_db_path("relay")
    asyncio.run(_serve(path, host, port, config, metrics_port, metrics_host))
