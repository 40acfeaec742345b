"""What paying adds to a job: free vs paid (dev wallet: pay-first, and pay-for-the-key, the
client's default) vs paid (customer on NWC, pay-first), same run.

Embedded relay, one Provider on the OpenAI server double (fixed 20 ms latency), one
PylonClient per mode; sequential asks (c=1) and a burst (c=16). Prints medians, the added
latency (paid - free), jobs/s ratios and this process's CPU per job (every thread: relay,
provider, client, wallets), and writes bench/results/payments.json.
Issue targets: +50 ms median with the dev wallet, +150 ms with NWC.

    .venv/bin/python bench/payments.py [--jobs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nexus_relay import running_relay  # noqa: E402
from pylon.provider.backends import OpenAIBackend  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.customer.ledger import Ledger  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402
from tests.peers.openai_double import OpenAIDouble  # noqa: E402
from wallet.dev import DevWallet, fund  # noqa: E402
from wallet.nwc_service import NwcService  # noqa: E402


# the pay-first flow this bench has always measured (bench/market.py compares pay-for-the-key),
# with the money-safe daily default lifted for thousands of bench payments
PAY_FIRST = dict(key_delivery=False, daily_budget_msat=10**12)


async def run_mode(client: PylonClient, provider: str, n: int, c: int) -> dict:
    lat: list[float] = []
    phases: dict[str, list[float]] = {}
    sem = asyncio.Semaphore(c)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            out = await client.ask(f"bench {i}", provider=provider, max_tokens=16, timeout=60, encrypted=False)
            lat.append(time.perf_counter() - t0)
            t = out.timings  # seconds since the ask started, per step the client saw
            prev = 0.0
            for step in ("published", "quoted", "paid", "processing", "result"):
                if step in t:
                    phases.setdefault(step, []).append(t[step] - prev)
                    prev = t[step]

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"median_ms": round(statistics.median(lat) * 1000, 2), "per_s": round(n / wall, 2),
            # this process's CPU (relay, provider, client, wallet: every thread) per job
            "cpu_ms_per_job": round(cpu * 1000 / n, 2),
            # median ms spent in each step, from the previous step the client saw (where the time goes)
            "steps_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in phases.items()}}


async def main(args: argparse.Namespace) -> dict:
    double = OpenAIDouble()
    double.latency_s = 0.02
    double.start_in_thread()
    out: dict = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ledger = Path(tmp) / "dev.sqlite"
            fund(ledger, "customer", 10**10)
            fund(ledger, "nwc-customer", 10**10)
            async with running_relay(Path(tmp) / "relay.sqlite") as relay:
                backend = OpenAIBackend(double.base_url)
                free = Provider([relay.url], backend, keys=Keys.generate(), db_path=Path(tmp) / "free.sqlite")
                paid = Provider([relay.url], backend, keys=Keys.generate(), db_path=Path(tmp) / "paid.sqlite",
                                free=False, price_msat=1_000, wallet=DevWallet(ledger, "provider"))
                service = NwcService(DevWallet(ledger, "nwc-customer"), [relay.url])
                conn = service.new_connection(budget_msat=None)
                async with free.running(), paid.running(), service.running():
                    from wallet import open_wallet

                    modes = {
                        "free": (PylonClient([relay.url], keys=Keys.generate()), free.pubkey),
                        "paid_dev": (PylonClient([relay.url], keys=Keys.generate(), wallet=DevWallet(ledger, "customer"),
                                                 ledger=Ledger(Path(tmp) / "r1.sqlite"), **PAY_FIRST), paid.pubkey),
                        # the default flow (pay for the key to a sealed result), same wallet as paid_dev
                        "paid_key": (PylonClient([relay.url], keys=Keys.generate(), wallet=DevWallet(ledger, "customer"),
                                                 ledger=Ledger(Path(tmp) / "r3.sqlite"), daily_budget_msat=10**12),
                                     paid.pubkey),
                        "paid_nwc": (PylonClient([relay.url], keys=Keys.generate(),
                                                 wallet=open_wallet(service.uri_for(conn)),
                                                 ledger=Ledger(Path(tmp) / "r2.sqlite"), **PAY_FIRST), paid.pubkey),
                    }
                    for client, _ in modes.values():
                        await client.start()
                    try:
                        for c in args.conc:
                            row: dict = {}
                            for _round in range(args.rounds):  # interleaved rounds; the best per mode
                                for name, (client, pk) in modes.items():
                                    if name not in args.modes:
                                        continue
                                    r = await run_mode(client, pk, args.jobs, c)
                                    best = row.get(name)
                                    if best is None or r["median_ms"] < best["median_ms"]:
                                        row[name] = r
                            for name in ("paid_dev", "paid_key", "paid_nwc"):
                                if name not in row or "free" not in row:
                                    continue
                                row[name]["added_median_ms"] = round(row[name]["median_ms"] - row["free"]["median_ms"], 2)
                                row[name]["ratio_per_s"] = round(row[name]["per_s"] / row["free"]["per_s"], 3)
                            out[f"c{c}"] = row
                    finally:
                        for client, _ in modes.values():
                            await client.close()
                            if client.wallet is not None:
                                await client.wallet.aclose()
                await backend.aclose()
    finally:
        double.stop_thread()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 16], help="concurrency levels (default: 1 16)")
    ap.add_argument("--modes", nargs="+", default=["free", "paid_dev", "paid_key", "paid_nwc"],
                    help="subset of free paid_dev paid_key paid_nwc (profiling)")
    result = asyncio.run(main(ap.parse_args()))
    for c, row in result.items():
        for name, r in row.items():
            extra = (f"  +{r['added_median_ms']} ms median, {r['ratio_per_s']}x jobs/s of free"
                     if "added_median_ms" in r else "")
            print(f"{c:>4} {name:9} median {r['median_ms']:8.2f} ms  {r['per_s']:7.2f} jobs/s"
                  f"  CPU {r['cpu_ms_per_job']:5.2f} ms/job{extra}")
            print(f"{'':14} steps (ms): " + ", ".join(f"{k} {v}" for k, v in r["steps_ms"].items()))
    path = Path(__file__).parent / "results" / "payments.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
