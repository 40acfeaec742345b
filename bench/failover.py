"""How long an untargeted ask whose provider says `error` takes to report it (issue 10, failover).

Embedded relay; one real Provider whose backend (the OpenAI server double) answers every
chat request with HTTP 400, so it says `error` at once. Each case is asked `--runs` times
(median seconds to the ProviderError), with the client's default error grace (3 s):

1. only that provider is live: the client sees from the announcements that nobody else could
   take the job, so it reports the error at once (no grace, no re-send);
2. the baseline, measured in the same run: the same ask with the live-provider lookup switched
   off, which is how every ask behaved before (3 s grace + 5 s for someone to take the re-send);
3. another provider is live (announced) but silent: the waits are kept, as they should be.

    .venv/bin/python bench/failover.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nexus_relay import running_relay  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.errors import ProviderError  # noqa: E402
from pylon.jobs.nip89 import build_announcement  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.backends import OpenAIBackend  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402
from pylon.relay.pool import RelayPool  # noqa: E402
from tests.peers.openai_double import OpenAIDouble  # noqa: E402


async def time_error(relay_url: str, runs: int, *, lookup: bool) -> float:
    """Median seconds from ask() to its ProviderError."""
    took = []
    async with PylonClient([relay_url], keys=Keys.generate(), keep_scores=False) as client:
        for i in range(runs):
            if not lookup:
                client._live = None  # the baseline: no idea who else is there (the code before)
            t0 = time.perf_counter()
            try:
                await client.ask(f"failing ask {i} {time.time()}", timeout=30)
            except ProviderError:
                took.append(time.perf_counter() - t0)
            else:
                raise SystemExit("the ask did not fail: the bench is broken")
    return round(statistics.median(took), 3)


async def main(args: argparse.Namespace) -> dict:
    double = OpenAIDouble().start_in_thread()
    double.fail_next(10**6, status=400, message="bad request")
    out: dict = {"runs": args.runs}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            os.environ["PYLON_HOME"] = str(t / "home")
            async with running_relay(t / "relay.sqlite") as relay:
                backend = OpenAIBackend(double.base_url)
                provider = Provider([relay.url], backend, keys=Keys.generate(), db_path=t / "p.sqlite")
                async with provider.running():
                    out["alone_s"] = await time_error(relay.url, args.runs, lookup=True)
                    out["alone_baseline_s"] = await time_error(relay.url, args.runs, lookup=False)
                    other = Keys.generate()  # announced, never answers
                    async with RelayPool([relay.url], keys=other) as pool:
                        await pool.publish(build_announcement(other, models=[], expires_in_s=300))
                    out["other_live_s"] = await time_error(relay.url, args.runs, lookup=True)
                await backend.aclose()
    finally:
        double.stop_thread()
    out["alone_vs_baseline"] = round(out["alone_s"] / out["alone_baseline_s"], 4)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    print(json.dumps(asyncio.run(main(ap.parse_args())), indent=2))
