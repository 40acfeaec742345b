"""Scale-out benchmark: `pylon serve --workers 2` against one provider process, in one run.

    .venv/bin/python bench/workers.py [--jobs 800] [--concurrency 64] [--latencies-ms 0,20]
                                      [--workers 1,2] [--max-tokens 16] [--rounds 3]

Every part is its own process on 127.0.0.1: `pylon relay` (the embedded nexus relay), the
OpenAI-compatible double (instant, or a fixed 20 ms per request: a backend that is never the
bottleneck), `pylon serve --workers W` for each W, and this script as the customer (one
PylonClient sending `--concurrency` asks at once, targeted at the provider under test).

For each backend latency and each W, with the same prompts and max_tokens: jobs/s and median
latency, and the CPU milliseconds per job of each process (the provider's is the supervisor's
plus all its workers'), in `--rounds` interleaved rounds (1, 2, 1, 2, ...). Ratio = median
jobs/s with W workers / median jobs/s with the first W in the list (1), measured in this run. `provider_capacity_per_core` = 1000 / provider CPU ms per job: the
jobs/s one core of provider could take if relay and customers ran elsewhere. Results:
bench/results/workers.json.

`--burst N` instead: N requests signed beforehand are published at once to a provider already
serving (no customer client in the loop), jobs/s from the first publish to the last result
stored, with the provider's and the relay's CPU: which of the two sets the ceiling here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.jobs import PYLON, Proc, cpu_s, prompts, run_concurrently, start_double, start_relay  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402

RESULTS = REPO / "bench" / "results" / "workers.json"


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (the supervisor's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live children (a worker's own children are none)."""
    total = cpu_s(pid)
    for child in children(pid):
        try:
            total += cpu_s(child)
        except OSError:
            pass
    return total


def start_provider(tmp: Path, label: str, relay: str, backend: str, workers: int, concurrency: int) -> tuple[Proc, Keys]:
    home = Path(tempfile.mkdtemp(prefix=f"provider-{label}-{workers}w-", dir=tmp))
    keys = Keys.generate()
    keys.save(home / "identity.key")
    argv = [PYLON, "serve", "--relay", relay, "--backend", backend, "--concurrency", str(concurrency),
            "--partial-interval-ms", "50"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    proc = Proc(argv, env={"PYLON_HOME": str(home)})
    proc.start("serving as")
    assert proc.proc is not None and proc.proc.stdout is not None
    for _ in range(workers - 1):  # one "serving as" line per worker
        while "serving as" not in proc.proc.stdout.readline():
            pass
    proc.home = home  # type: ignore[attr-defined]
    return proc, keys


def split(home: Path) -> list[int]:
    """Jobs each worker ran (from the shared job store), most first."""
    import sqlite3

    with sqlite3.connect(home / "provider.sqlite") as db:
        rows = db.execute("SELECT COUNT(*) FROM jobs GROUP BY claimed_by ORDER BY 1 DESC").fetchall()
    return [r[0] for r in rows]


async def load(relay: str, provider: str, n: int, c: int, max_tokens: int) -> dict[str, Any]:
    texts = prompts(n)
    async with PylonClient([relay], keys=Keys.generate()) as client:
        async def one(i: int) -> None:
            await client.ask(texts[i], provider=provider, max_tokens=max_tokens, temperature=0.0, timeout=300)
        await run_concurrently(min(n, 2 * c), c, one)  # warm-up: connections, caches, the first quotes
        wall, lat = await run_concurrently(n, c, one)
    return {"per_s": n / wall, "median_ms": statistics.median(lat) * 1000}


async def measure(tmp: Path, relay: Proc, relay_url: str, backend: str, label: str, workers: int,
                  args: argparse.Namespace, *, bystander: bool = False) -> dict[str, Any]:
    provider, keys = start_provider(tmp, label, relay_url, backend, workers, args.concurrency)
    other = start_provider(tmp, label + "-bystander", relay_url, backend, 1, args.concurrency)[0] if bystander else None
    try:
        other_cpu0 = cpu_s(other.pid) if other is not None else 0.0
        cpu0 = {"provider": tree_cpu_s(provider.pid), "relay": cpu_s(relay.pid), "client": cpu_s(os.getpid())}
        t0 = time.perf_counter()
        out = await load(relay_url, keys.public_key, args.jobs, args.concurrency, args.max_tokens)
        elapsed = time.perf_counter() - t0
        cpu1 = {"provider": tree_cpu_s(provider.pid), "relay": cpu_s(relay.pid), "client": cpu_s(os.getpid())}
        worker_cpu = sorted((round(cpu_s(p), 2) for p in children(provider.pid)), reverse=True) if workers > 1 else []
        other_cpu = cpu_s(other.pid) - other_cpu0 if other is not None else None
    finally:
        provider.stop()
        if other is not None:
            other.stop()
    jobs_split = split(provider.home)  # type: ignore[attr-defined]
    jobs = args.jobs + min(args.jobs, 2 * args.concurrency)  # the warm-up's jobs used CPU too
    cpu = {k: round((cpu1[k] - cpu0[k]) * 1000 / jobs, 3) for k in cpu0}
    cpu["pylon_total"] = round(sum(cpu.values()), 3)
    return {"workers": workers, "jobs_per_s": round(out["per_s"], 1), "median_ms": round(out["median_ms"], 1),
            "cpu_ms_per_job": cpu, "provider_cores_busy": round((cpu1["provider"] - cpu0["provider"]) / elapsed, 2),
            "provider_capacity_per_core": round(1000 / cpu["provider"], 0) if cpu["provider"] else None,
            "jobs_per_worker": jobs_split, "cpu_s_per_worker": worker_cpu,
            **({"bystander_cpu_ms_per_request": round(other_cpu * 1000 / jobs, 3)} if other_cpu is not None else {})}


async def burst(tmp: Path, relay: Proc, relay_url: str, backend: str, label: str, workers: int, n: int,
                concurrency: int) -> dict[str, Any]:
    """Provider-bound: `n` requests signed beforehand are published at once to a provider that
    is already serving; jobs/s = n / (first publish to the last result stored). No customer
    client runs (no replies to read), so the relay and the provider have the machine."""
    from pylon.jobs.nip90 import JobRequest
    from pylon.nostr.filters import Filter
    from pylon.relay.pool import RelayPool

    provider, keys = start_provider(tmp, label + "-burst", relay_url, backend, workers, concurrency)
    customers = [Keys.generate() for _ in range(max(1, n // 8))]  # 8 each: far below per-customer caps
    texts = prompts(n)
    events = [JobRequest.from_prompt(texts[i], providers=[keys.public_key], max_tokens=16)
              .to_event(customers[i % len(customers)]) for i in range(n)]
    results = [Filter.of(kinds=[6050], authors=[keys.public_key])]
    try:
        async with RelayPool([relay_url]) as pool:
            await pool.wait_connected()
            sem = asyncio.Semaphore(256)

            async def put(event: Any) -> None:
                async with sem:
                    await pool.publish(event)
            cpu0, relay0 = tree_cpu_s(provider.pid), cpu_s(relay.pid)
            t0 = time.perf_counter()
            await asyncio.gather(*(put(e) for e in events))
            seen = 0
            deadline = time.monotonic() + 300
            while seen < n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                seen = max((await pool.count(results, timeout=5.0)).values(), default=0)
            wall = time.perf_counter() - t0
            cpu, relay_cpu = tree_cpu_s(provider.pid) - cpu0, cpu_s(relay.pid) - relay0
    finally:
        provider.stop()
    if seen < n:
        raise RuntimeError(f"burst: {seen} of {n} results")
    return {"workers": workers, "jobs": n, "jobs_per_s": round(n / wall, 1),
            "provider_cpu_ms_per_job": round(cpu * 1000 / n, 3), "provider_cores_busy": round(cpu / wall, 2),
            "relay_cpu_ms_per_job": round(relay_cpu * 1000 / n, 3), "relay_cores_busy": round(relay_cpu / wall, 2)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=800)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latencies-ms", default="0,20")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the worker counts")
    ap.add_argument("--burst", type=int, default=0, help="only the burst run, with this many requests")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "jobs": args.jobs, "concurrency": args.concurrency, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        relay, relay_url = start_relay(tmp)
        try:
            if args.burst:
                double, backend = start_double(0)
                try:
                    for _ in range(args.rounds):
                        for w in counts:
                            row = await burst(tmp, relay, relay_url, backend, "double-0ms", w, args.burst,
                                              args.concurrency)
                            print(f"[burst] workers={w}  {row['jobs_per_s']:7.1f} jobs/s  provider "
                                  f"{row['provider_cpu_ms_per_job']:.2f} ms/job ({row['provider_cores_busy']:.2f} "
                                  f"cores busy)  relay {row['relay_cpu_ms_per_job']:.2f} ms/job "
                                  f"({row['relay_cores_busy']:.2f} cores busy)", flush=True)
                finally:
                    double.stop()
                return
            for latency in (float(x) for x in args.latencies_ms.split(",")):
                double, backend = start_double(latency)
                label = f"double-{latency:g}ms"
                rows: list[dict[str, Any]] = []
                try:
                    # interleaved rounds (1, 2, 1, 2, ...): a neighbour's load on this shared
                    # machine falls on both counts alike; the summary takes each count's median
                    for _ in range(args.rounds):
                        for w in counts:
                            row = await measure(tmp, relay, relay_url, backend, label, w, args)
                            rows.append(row)
                            cpu = row["cpu_ms_per_job"]
                            print(f"[{label}] workers={w}  {row['jobs_per_s']:7.1f} jobs/s  median "
                                  f"{row['median_ms']:6.1f} ms  CPU ms/job provider {cpu['provider']:.2f} relay "
                                  f"{cpu['relay']:.2f} client {cpu['client']:.2f}  provider cores busy "
                                  f"{row['provider_cores_busy']:.2f}  jobs per worker {row['jobs_per_worker']}",
                                  flush=True)
                    # what a request costs a process that only receives it (a worker that is not
                    # its preferred one pays this plus a timer and a SELECT): a second provider
                    # identity on the same relay, beside one worker, never addressed
                    by = await measure(tmp, relay, relay_url, backend, label, 1, args, bystander=True)
                    print(f"[{label}] a bystander provider spends {by['bystander_cpu_ms_per_request']:.3f} ms CPU "
                          "per request it only receives", flush=True)
                finally:
                    double.stop()
                summary: dict[str, Any] = {}
                for w in counts:
                    mine = [r for r in rows if r["workers"] == w]
                    summary[str(w)] = {
                        "jobs_per_s": round(statistics.median(r["jobs_per_s"] for r in mine), 1),
                        "provider_cpu_ms_per_job": round(statistics.median(
                            r["cpu_ms_per_job"]["provider"] for r in mine), 3),
                        "pylon_cpu_ms_per_job": round(statistics.median(
                            r["cpu_ms_per_job"]["pylon_total"] for r in mine), 3)}
                base = summary[str(counts[0])]
                for w in counts:
                    s_w = summary[str(w)]
                    s_w["ratio"] = round(s_w["jobs_per_s"] / base["jobs_per_s"], 3)
                    s_w["provider_cpu_ratio"] = round(s_w["provider_cpu_ms_per_job"] / base["provider_cpu_ms_per_job"], 3)
                    print(f"[{label}] workers={w}: median {s_w['jobs_per_s']:.1f} jobs/s, ratio {s_w['ratio']:.2f} "
                          f"vs {counts[0]} worker(s); provider CPU {s_w['provider_cpu_ms_per_job']:.2f} ms/job "
                          f"(x{s_w['provider_cpu_ratio']:.2f}); Pylon total {s_w['pylon_cpu_ms_per_job']:.2f} ms/job",
                          flush=True)
                summary["bystander_cpu_ms_per_request"] = by["bystander_cpu_ms_per_request"]
                results["runs"][label] = rows
                results.setdefault("summary", {})[label] = summary
        finally:
            relay.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    asyncio.run(main())
