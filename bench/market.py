"""The open market's costs and its one promise (issue 10), measured in one run.

Embedded relay; providers on the OpenAI server double (fixed 20 ms latency); dev wallet.

1. Decision window: untargeted asks with a free and a priced provider online, with the
   window (default 300 ms) and without it (0 ms: first acceptable quote), against untargeted
   asks with only the free provider online (the baseline). Reports the median latency and the
   fraction of asks that paid (target 0 with the window).
2. Pay for the key vs pay-first: targeted asks to a priced provider, each flow, at 1 and 16
   asks at once: median latency and jobs/s, ratio against pay-first in the same run.
3. What the window costs a paid ask: untargeted asks with only the priced provider online,
   with and without the window.

    .venv/bin/python bench/market.py [--jobs 24] [--window-ms 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nexus_relay import running_relay  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.customer.ledger import Ledger  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.backends import OpenAIBackend  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402
from tests.peers.openai_double import OpenAIDouble  # noqa: E402
from wallet.dev import DevWallet, fund  # noqa: E402

LIFTED = dict(daily_budget_msat=10**12, keep_scores=False)


async def asks(client: PylonClient, n: int, c: int, **kw: object) -> dict:
    lat: list[float] = []
    paid = 0
    sem = asyncio.Semaphore(c)

    async def one(i: int) -> None:
        nonlocal paid
        async with sem:
            t0 = time.perf_counter()
            out = await client.ask(f"market {i} {time.time()}", max_tokens=16, timeout=60, **kw)  # type: ignore[arg-type]
            lat.append(time.perf_counter() - t0)
            paid += out.paid_msat > 0

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    return {"median_ms": round(statistics.median(lat) * 1000, 1), "per_s": round(n / wall, 2),
            "paid_fraction": round(paid / n, 3)}


@contextlib.asynccontextmanager
async def paid_stack() -> AsyncIterator[tuple[Path, Path, Any, OpenAIBackend]]:
    """What the paid-market benches share: the OpenAI double (20 ms), a temp folder, a dev
    ledger whose `customer` account is funded, an embedded relay, and a backend on the double:
    (folder, ledger, relay, backend); all stopped on exit."""
    double = OpenAIDouble()
    double.latency_s = 0.02
    double.start_in_thread()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            ledger = t / "dev.sqlite"
            fund(ledger, "customer", 10**10)
            async with running_relay(t / "relay.sqlite") as relay:
                backend = OpenAIBackend(double.base_url)
                try:
                    yield t, ledger, relay, backend
                finally:
                    await backend.aclose()
    finally:
        double.stop_thread()


async def main(args: argparse.Namespace) -> dict:
    out: dict = {"jobs": args.jobs, "window_ms": args.window_ms}
    async with paid_stack() as (t, ledger, relay, backend):
        free = Provider([relay.url], backend, keys=Keys.generate(), db_path=t / "free.sqlite")
        paid = Provider([relay.url], backend, keys=Keys.generate(), db_path=t / "paid.sqlite",
                        free=False, price_msat=1_000, wallet=DevWallet(ledger, "provider"))

        def client(name: str, **kw: object) -> PylonClient:
            return PylonClient([relay.url], keys=Keys.generate(), wallet=DevWallet(ledger, "customer"),
                               ledger=Ledger(t / f"{name}.sqlite"), **LIFTED, **kw)  # type: ignore[arg-type]

        async with paid.running():
            # 2. pay for the key vs pay-first (targeted, so the window plays no part)
            first, key = client("first", key_delivery=False), client("key", key_delivery=True)
            async with first, key:
                for c in (1, 16):
                    row = {"pay_first": await asks(first, args.jobs, c, provider=paid.pubkey),
                           "key": await asks(key, args.jobs, c, provider=paid.pubkey)}
                    row["key_added_ms"] = round(row["key"]["median_ms"] - row["pay_first"]["median_ms"], 1)
                    row["key_per_s_ratio"] = round(row["key"]["per_s"] / row["pay_first"]["per_s"], 2)
                    out[f"delivery_c{c}"] = row
            # what the window costs a paid untargeted ask (only the priced provider online)
            w = client("w_paid", decision_window_s=args.window_ms / 1000, key_delivery=False)
            nw = client("nw_paid", decision_window_s=0.0, key_delivery=False)
            async with w, nw:
                for c in (1, 16):
                    row = {"window": await asks(w, args.jobs, c), "no_window": await asks(nw, args.jobs, c)}
                    row["window_added_ms"] = round(row["window"]["median_ms"] - row["no_window"]["median_ms"], 1)
                    out[f"paid_only_c{c}"] = row
            async with free.running():
                # 1. the decision window, with a free and a priced provider online
                # pay-first quotes (they arrive at once, as in the report)
                windowed = client("win", decision_window_s=args.window_ms / 1000, key_delivery=False)
                no_window = client("nowin", decision_window_s=0.0, key_delivery=False)
                async with windowed, no_window:
                    for c in (1, 16):
                        out[f"window_c{c}"] = {
                            "window": await asks(windowed, args.jobs, c),
                            "no_window": await asks(no_window, args.jobs, c),
                        }
        # baseline: the free provider alone, untargeted
        async with free.running():
            base = client("base")
            async with base:
                for c in (1, 16):
                    b = await asks(base, args.jobs, c)
                    row = out[f"window_c{c}"]
                    row["free_only"] = b
                    row["window_added_ms"] = round(row["window"]["median_ms"] - b["median_ms"], 1)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=24)
    ap.add_argument("--window-ms", type=int, default=300)
    result = asyncio.run(main(ap.parse_args()))
    print(json.dumps(result, indent=2))
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "market.json").write_text(json.dumps(result, indent=2))
