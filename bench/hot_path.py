"""Pylon's own cost per job, this tree against a baseline commit, in one run.

    .venv/bin/python bench/hot_path.py [--baseline REF] [--rounds 3] [--jobs 640] [--latency-ms 0]
                                       [--one-core] [--paid]

For each tree (this working tree, and REF unpacked with `git archive` into a temporary
folder), the whole path runs as processes on 127.0.0.1, each on the tree's own code
(PYTHONPATH): `pylon relay`, `pylon serve` against the OpenAI server double (tests/peers,
instant by default) and a load generator (PylonClient, as `pylon ask` would use it). The load
generator sends `--jobs` jobs at c=32 and 64 at c=1; CPU seconds of relay, provider and
client come from /proc, so the figure is each process's own CPU per job, not wall time.
Rounds alternate baseline/current (A B A B ...) so drift on this shared machine hits both;
medians over rounds, and the ratio current/baseline is what to read.

`--one-core` pins the provider to CPU 0 and everything else to CPU 1 (taskset) and reports
the provider's jobs/s against the instant double: what one provider process sustains on one
core. `--paid` prices the jobs (dev wallet on both sides, 1 sat per job), c=16.
Results: bench/results/hot_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from jobs import Proc, cpu_s  # noqa: E402

RESULTS = REPO / "bench" / "results" / "hot_path.json"
PYLON = str(Path(sys.executable).parent / "pylon")

# The load generator, run with the tree under test first on sys.path.
LOADGEN = r"""
import asyncio, json, os, statistics, sys, time
from pylon.customer.client import PylonClient
from pylon.nostr.keys import Keys

def cpu():
    t = os.times()
    return t.user + t.system

async def main(relay, plan, wallet_uri):
    kwargs = {}
    if wallet_uri:
        from wallet import open_wallet
        kwargs = {"wallet": open_wallet(wallet_uri), "max_msat": 10_000, "daily_budget_msat": 10**12}
    out = {}
    async with PylonClient([relay], keys=Keys.generate(), **kwargs) as client:
        async def one(i):
            t0 = time.perf_counter()
            await client.ask(f"Question {i}: tell me about {i}.", max_tokens=16, temperature=0.0, timeout=120)
            return time.perf_counter() - t0
        for c, n in plan:
            await asyncio.gather(*(one(i) for i in range(min(c, 8))))  # warm
            sem = asyncio.Semaphore(c)
            lat = []
            async def guarded(i):
                async with sem:
                    lat.append(await one(i))
            print(json.dumps({"start": c}), flush=True)
            sys.stdin.readline()  # the parent snapshots relay/provider CPU now
            t0, c0 = time.perf_counter(), cpu()
            await asyncio.gather(*(guarded(i) for i in range(n)))
            wall, cl = time.perf_counter() - t0, cpu() - c0
            print(json.dumps({"c": c, "n": n, "wall": wall, "median_ms": statistics.median(lat) * 1000,
                              "client_cpu": cl}), flush=True)
            sys.stdin.readline()

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
"""


def unpack(ref: str, into: Path) -> Path:
    """The tree at `ref` as plain files (no git state), so its code runs beside ours."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None and shutil.which("taskset") else argv


def one_round(tree: Path, tmp: Path, args: argparse.Namespace, double_url: str) -> dict[str, Any]:
    """Relay + provider + load generator on `tree`'s code; CPU ms per job by process."""
    env = {"PYTHONPATH": str(tree)}
    other = 1 if args.one_core else None
    relay = Proc(pinned([PYLON, "relay", "--port", "0", "--db", str(tmp / "relay.sqlite")], other),
                 env={**env, "PYLON_HOME": str(tmp / "relay-home")})
    relay_url = relay.start("ws://")
    serve = [PYLON, "serve", "--relay", relay_url, "--backend", double_url, "--concurrency", "32"]
    wallet_uri = ""
    if args.paid:
        ledger = tmp / "ledger.sqlite"
        wallet_uri = f"dev://{ledger}?account=customer"
        subprocess.run([PYLON, "wallet", "fund", "100000000", "--wallet", wallet_uri], check=True,
                       env={**os.environ, **env, "PYLON_HOME": str(tmp / "client-home")}, capture_output=True)
        serve += ["--price-msat", "1000", "--wallet", f"dev://{ledger}?account=provider"]
    provider = Proc(pinned(serve, 0 if args.one_core else None), env={**env, "PYLON_HOME": str(tmp / "prov-home")})
    rows: dict[str, Any] = {}
    try:
        provider.start("serving as")
        plan = [[16 if args.paid else 32, args.jobs], [1, 64]]
        gen = subprocess.Popen(pinned([sys.executable, "-c", LOADGEN, relay_url, json.dumps(plan), wallet_uri], other),
                               env={**os.environ, **env, "PYLON_HOME": str(tmp / "client-home")},
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert gen.stdin is not None and gen.stdout is not None
        try:
            for _ in plan:
                json.loads(gen.stdout.readline())  # {"start": c}
                before = {"relay": cpu_s(relay.pid), "provider": cpu_s(provider.pid)}
                gen.stdin.write("\n")
                gen.stdin.flush()
                line = gen.stdout.readline()
                if not line:
                    raise RuntimeError("load generator died")
                done = json.loads(line)
                n = done["n"]
                per = {name: (cpu_s(pid) - before[name]) * 1000 / n
                       for name, pid in (("relay", relay.pid), ("provider", provider.pid))}
                per["client"] = done["client_cpu"] * 1000 / n
                per["total"] = sum(per.values())
                rows[f"c{done['c']}"] = {"jobs_per_s": n / done["wall"], "median_ms": done["median_ms"],
                                         "cpu_ms_per_job": per}
                gen.stdin.write("\n")
                gen.stdin.flush()
            gen.wait(30)
        finally:
            if gen.poll() is None:
                gen.kill()
    finally:
        provider.stop()
        relay.stop()
    return rows


def median_rows(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rounds[0]:
        rs = [r[key] for r in rounds]
        out[key] = {
            "jobs_per_s": round(statistics.median(r["jobs_per_s"] for r in rs), 1),
            "median_ms": round(statistics.median(r["median_ms"] for r in rs), 2),
            "cpu_ms_per_job": {k: round(statistics.median(r["cpu_ms_per_job"][k] for r in rs), 3)
                               for k in rs[0]["cpu_ms_per_job"]},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="", help="git ref to compare against (default: none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=640, help="jobs per round at c=32 (c=1 runs 64)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="the double's fixed latency")
    ap.add_argument("--one-core", action="store_true", help="provider on CPU 0, the rest on CPU 1")
    ap.add_argument("--paid", action="store_true", help="1 sat per job, dev wallet, c=16")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pylon-bench-hot-") as tmpdir:
        tmp = Path(tmpdir)
        trees = {"current": REPO}
        if args.baseline:
            trees = {"baseline": unpack(args.baseline, tmp / "baseline"), **trees}
        double = Proc([sys.executable, str(REPO / "tests" / "peers" / "openai_double.py"), "--port", "0",
                       "--latency-ms", str(args.latency_ms)])
        double_url = double.start("http://")
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        try:
            for r in range(args.rounds):
                for name, tree in trees.items():
                    work = tmp / f"{name}-{r}"
                    work.mkdir()
                    row = one_round(tree, work, args, double_url)
                    rounds[name].append(row)
                    print(f"round {r + 1} {name:8} " + "  ".join(
                        f"c={k[1:]}: {v['jobs_per_s']:.0f} jobs/s, CPU ms/job {v['cpu_ms_per_job']['total']:.2f} "
                        f"(relay {v['cpu_ms_per_job']['relay']:.2f} provider {v['cpu_ms_per_job']['provider']:.2f} "
                        f"client {v['cpu_ms_per_job']['client']:.2f})" for k, v in row.items()), flush=True)
        finally:
            double.stop()
    result: dict[str, Any] = {"params": vars(args), "median": {name: median_rows(rs) for name, rs in rounds.items()}}
    if args.baseline:
        base, cur = result["median"]["baseline"], result["median"]["current"]
        result["ratio_current_over_baseline"] = {
            key: {"jobs_per_s": round(cur[key]["jobs_per_s"] / base[key]["jobs_per_s"], 3),
                  **{f"cpu_{k}": round(cur[key]["cpu_ms_per_job"][k] / base[key]["cpu_ms_per_job"][k], 3)
                     for k in cur[key]["cpu_ms_per_job"]}}
            for key in cur
        }
        for key, ratio in result["ratio_current_over_baseline"].items():
            print(f"{key}: current/baseline jobs/s x{ratio['jobs_per_s']:.2f}, CPU/job total x{ratio['cpu_total']:.2f} "
                  f"(relay x{ratio['cpu_relay']:.2f} provider x{ratio['cpu_provider']:.2f} "
                  f"client x{ratio['cpu_client']:.2f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
