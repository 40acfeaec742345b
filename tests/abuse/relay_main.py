"""Run nexus_relay in its own process for the abuse suite, so its RSS is its own.

    python tests/abuse/relay_main.py '{"max_outbox_bytes": 1048576}' [DB_PATH]

Prints the ws:// URL on the first line, then serves until SIGTERM/SIGINT. Config keys the
running nexus_relay does not know are ignored (bench/abuse.py also runs older sources).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path


async def main() -> None:
    from nexus_relay import RelayConfig, running_relay

    known = {f.name for f in dataclasses.fields(RelayConfig)}
    overrides = {k: v for k, v in json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}").items() if k in known}
    db = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    async with running_relay(db, RelayConfig(**overrides)) as relay:
        print(relay.url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("ABUSE_RELAY_LOG", "WARNING"), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
