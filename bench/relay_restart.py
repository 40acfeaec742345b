"""Relay restart time on a database of N events (default 100,000): after a clean stop, and after
a SIGKILL-like exit with automatic checkpoints off (as when readers keep the WAL busy under load:
only the writer's own TRUNCATE checkpoints past 64 MiB bound it). Prints seconds to listen
and to answer a first REQ, and the ratio of the killed case to the clean one.

    .venv/bin/python bench/relay_restart.py [N]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BUILD = r"""
import asyncio, os, sys, time
from pathlib import Path
from nexus_relay.store import EventStore, PendingWrite
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys
path, n, kill = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "kill"
keys = Keys.generate()
async def main():
    st = EventStore(path, fsync=False); st.open()
    st._w.execute("PRAGMA wal_autocheckpoint=0")
    st.start(asyncio.get_running_loop())
    base = int(time.time()) - 3600
    for i in range(0, n, 1000):
        batch = []
        for j in range(i, min(n, i + 1000)):
            ev = Event.build(keys, 5050, f"job {j}", [["i", f"q{j}", "text"]], created_at=base + j % 3600)
            batch.append(PendingWrite(ev, ev.to_json()))
        fut = asyncio.get_running_loop().create_future()
        st.submit(batch, lambda r, f=fut: f.set_result(r))
        await fut
    if kill:
        os._exit(0)  # like SIGKILL: the WAL keeps every write, nothing checkpointed
    st.close()
asyncio.run(main())
"""


async def _restart(db: Path) -> tuple[float, float]:
    from nexus_relay import running_relay
    from pylon.nostr.filters import Filter
    from pylon.relay.pool import RelayPool

    t0 = time.perf_counter()
    async with running_relay(db) as relay:
        t1 = time.perf_counter()
        async with RelayPool([relay.url]) as pool:
            await pool.query([Filter.of(kinds=[5050], limit=10)])
        t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    tmp = Path(tempfile.mkdtemp(prefix="pylon-relay-restart-"))
    try:
        results = {}
        for case in ("clean", "kill"):
            db = tmp / f"{case}.sqlite"
            subprocess.run([sys.executable, "-c", _BUILD, str(db), str(n), case], check=True)
            wal = Path(f"{db}-wal")
            wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
            listen, first = asyncio.run(_restart(db))
            again, _ = asyncio.run(_restart(db))
            results[case] = first
            print(f"{case:5} stop, {n} events, WAL {wal_mb:.0f} MB: listening after {listen:.3f} s, first REQ "
                  f"answered after {first:.3f} s; the restart after that {again:.3f} s")
        print(f"ratio killed/clean (first REQ): {results['kill'] / max(results['clean'], 1e-6):.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
