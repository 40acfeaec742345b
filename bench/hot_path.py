"""Pylon's own cost per job, this tree against a baseline commit, in one run.

    .venv/bin/python bench/hot_path.py [--baseline REF] [--rounds 3] [--jobs 640] [--latency-ms 0]
                                       [--one-core] [--paid] [--pay dev,nwc]

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
core.

`--pay dev,nwc` (`--paid` = `--pay dev`) prices the jobs at 1 sat and runs c=16 instead of
c=32; each round then also runs the same tree free at c=16, so paid/free jobs/s is a ratio
within one run (the issue's target: >= 0.8x with the dev wallet, >= 0.7x over NWC). `dev`:
both sides hold an account of one dev ledger. `nwc`: both sides pay through NIP-47, each
through its own `pylon wallet serve-nwc` process (over the same relay) in front of that
ledger's account; those processes' CPU is reported as `nwc`, outside Pylon's `total`.
Paid jobs are paid for the key (the customer's default where the provider's wallet can sell
keys: the dev wallet, NWC with hold invoices); `dev-first` and `nwc-first` make the customer
pay first (`payment-required`, `PylonClient(key_delivery=False)`), the flow of every wallet
that cannot sell keys, where the provider waits for the payment (over NWC: lookups, or the
`payment_received` notification). Results: bench/results/hot_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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

async def main(relay, plan, wallet_uri, first):
    kwargs = {}
    if wallet_uri:
        from wallet import open_wallet
        kwargs = {"wallet": open_wallet(wallet_uri), "max_msat": 10_000, "daily_budget_msat": 10**12}
        if first:  # pay first (payment-required), not for the key to a sealed result
            kwargs["key_delivery"] = False
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

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "",
                 len(sys.argv) > 4 and sys.argv[4] == "first"))
"""


def unpack(ref: str, into: Path) -> Path:
    """The tree at `ref` as plain files (no git state), so its code runs beside ours."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def trees_under_test(baseline: str, tmp: Path) -> dict[str, Path]:
    """{"baseline": REF's files (when given), "current": this working tree}, baseline first."""
    trees = {"current": REPO}
    if baseline:
        trees = {"baseline": unpack(baseline, tmp / "baseline"), **trees}
    return trees


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None and shutil.which("taskset") else argv


@dataclass
class Stack:
    """The processes of one measured path, started on one tree's code."""

    relay: Proc
    relay_url: str
    provider: Proc
    services: list[Proc]  # `pylon wallet serve-nwc`, one per side (NWC only)
    customer_wallet: str  # the load generator's wallet URI ("" for free jobs)
    provider_wallet: str

    def stop(self) -> None:
        self.provider.stop()
        for svc in self.services:
            svc.stop()
        self.relay.stop()


def start_stack(tree: Path, tmp: Path, double_url: str, wallet_kind: str = "", *,
                relay_cpu: int | None = None, provider_cpu: int | None = None) -> Stack:
    """`pylon relay`, then for paid jobs (`wallet_kind` "dev" or "nwc") a dev ledger with the
    customer's account funded (NWC: a `serve-nwc` in front of each side's account), then
    `pylon serve` (1 sat per job when paid) against the double; all started, or none left."""
    env = {"PYTHONPATH": str(tree)}
    relay = Proc(pinned([PYLON, "relay", "--port", "0", "--db", str(tmp / "relay.sqlite")], relay_cpu),
                 env={**env, "PYLON_HOME": str(tmp / "relay-home")})
    services: list[Proc] = []
    provider: Proc | None = None
    try:
        relay_url = relay.start("ws://")
        serve = [PYLON, "serve", "--relay", relay_url, "--backend", double_url, "--concurrency", "32"]
        customer_wallet = provider_wallet = ""
        if wallet_kind:
            ledger = tmp / "ledger.sqlite"
            customer_wallet = f"dev://{ledger}?account=customer"
            subprocess.run([PYLON, "wallet", "fund", "100000000", "--wallet", customer_wallet], check=True,
                           env={**os.environ, **env, "PYLON_HOME": str(tmp / "client-home")}, capture_output=True)
            provider_wallet = f"dev://{ledger}?account=provider"
            if wallet_kind == "nwc":
                uris = []
                for who, uri in (("customer", customer_wallet), ("provider", provider_wallet)):
                    svc = Proc(pinned([PYLON, "wallet", "serve-nwc", "--relay", relay_url, "--wallet", uri, "--json"],
                                      relay_cpu), env={**env, "PYLON_HOME": str(tmp / f"nwc-{who}-home")})
                    services.append(svc)
                    uris.append(_json_from(svc, svc.start("{")))
                customer_wallet, provider_wallet = uris
            serve += ["--price-msat", "1000", "--wallet", provider_wallet]
        provider = Proc(pinned(serve, provider_cpu), env={**env, "PYLON_HOME": str(tmp / "prov-home")})
        provider.start("serving as")
    except BaseException:
        if provider is not None:
            provider.stop()
        for svc in services:
            svc.stop()
        relay.stop()
        raise
    return Stack(relay, relay_url, provider, services, customer_wallet, provider_wallet)


@contextmanager
def load_generator(tree: Path, tmp: Path, stack: Stack, plan: list[list[int]], first: bool, *,
                   cpu: int | None = None) -> Iterator[subprocess.Popen[str]]:
    """The LOADGEN process on `tree`'s client against `stack`, paying with its customer wallet
    (`first`: paid first rather than for the key). It runs each [c, n] of `plan` when a line is
    written to its stdin and answers with a JSON line; on leaving it is given 30 s to end, and
    killed if it has not (or if the block raised)."""
    # cwd=tree: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH,
    # so from the repository root the load generator would run this tree's client for both
    gen = subprocess.Popen(pinned([sys.executable, "-c", LOADGEN, stack.relay_url, json.dumps(plan),
                                   stack.customer_wallet, "first" if first else "key"], cpu),
                           env={**os.environ, "PYTHONPATH": str(tree), "PYLON_HOME": str(tmp / "client-home")},
                           cwd=str(tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield gen
        gen.wait(30)
    finally:
        if gen.poll() is None:
            gen.kill()


def one_round(tree: Path, tmp: Path, args: argparse.Namespace, double_url: str, pay: str = "") -> dict[str, Any]:
    """Relay + provider + load generator on `tree`'s code; CPU ms per job by process.
    `pay`: "" free, "dev" or "nwc" (1 sat per job), with "-first" paid first rather than for the
    key. c=16 when the run compares paid with free."""
    wallet_kind, first = pay.removesuffix("-first"), pay.endswith("-first")
    other = 1 if args.one_core else None
    stack = start_stack(tree, tmp, double_url, wallet_kind, relay_cpu=other, provider_cpu=0 if args.one_core else None)
    relay, provider, services = stack.relay, stack.provider, stack.services
    rows: dict[str, Any] = {}
    try:
        plan = [[16 if args.pays else 32, args.jobs], [1, 64]]
        with load_generator(tree, tmp, stack, plan, first, cpu=other) as gen:
            assert gen.stdin is not None and gen.stdout is not None
            for _ in plan:
                json.loads(gen.stdout.readline())  # {"start": c}
                before = {"relay": cpu_s(relay.pid), "provider": cpu_s(provider.pid),
                          "nwc": sum(cpu_s(svc.pid) for svc in services)}
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
                per["total"] = sum(per.values())  # Pylon's own: relay, provider, client
                if services:
                    per["nwc"] = (sum(cpu_s(svc.pid) for svc in services) - before["nwc"]) * 1000 / n
                rows[f"c{done['c']}"] = {"jobs_per_s": n / done["wall"], "median_ms": done["median_ms"],
                                         "cpu_ms_per_job": per}
                gen.stdin.write("\n")
                gen.stdin.flush()
    finally:
        stack.stop()
    return rows


def _json_from(svc: Proc, first: str) -> str:
    """The connection URI from `serve-nwc --json`'s (possibly indented) JSON on its stdout."""
    text = first
    assert svc.proc is not None and svc.proc.stdout is not None
    while True:
        try:
            return json.loads(text)["uri"]
        except json.JSONDecodeError:
            line = svc.proc.stdout.readline()
            if not line:
                raise RuntimeError("serve-nwc exited before printing its connection URI") from None
            text += line


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


def paired(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], key: str,
           figure: str = "jobs_per_s") -> list[float]:
    """a/b of one figure in each round: runs of one round are minutes apart, so the drift of
    this shared machine hits both; the spread of these says how far a median ratio can be
    trusted."""
    def value(row: dict[str, Any]) -> float:
        return row[key]["cpu_ms_per_job"]["total"] if figure == "cpu_total" else row[key][figure]
    return [round(value(a) / value(b), 3) for a, b in zip(rows_a, rows_b)]


def spread(ratios: list[float]) -> str:
    return f"median x{statistics.median(ratios):.2f}, x{min(ratios):.2f}-x{max(ratios):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="", help="git ref to compare against (default: none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=640, help="jobs per round at c=32 (c=1 runs 64)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="the double's fixed latency")
    ap.add_argument("--one-core", action="store_true", help="provider on CPU 0, the rest on CPU 1")
    ap.add_argument("--paid", action="store_true", help="the same as --pay dev")
    ap.add_argument("--pay", default="", help="comma list of dev, nwc, dev-first, nwc-first: 1 sat per job, c=16, against free c=16")
    args = ap.parse_args()
    args.pays = [p for p in args.pay.split(",") if p] or (["dev"] if args.paid else [])
    if any(p.removesuffix("-first") not in ("dev", "nwc") for p in args.pays):
        ap.error("--pay takes dev, nwc, dev-first, nwc-first (comma-separated)")
    modes = ["free", *args.pays] if args.pays else [""]  # "": the free c=32 run, no paid comparison
    with tempfile.TemporaryDirectory(prefix="pylon-bench-hot-") as tmpdir:
        tmp = Path(tmpdir)
        trees = trees_under_test(args.baseline, tmp)
        double = Proc([sys.executable, str(REPO / "tests" / "peers" / "openai_double.py"), "--port", "0",
                       "--latency-ms", str(args.latency_ms)])
        double_url = double.start("http://")
        runs = {(f"{name}/{mode}" if mode else name): (tree, mode) for name, tree in trees.items() for mode in modes}
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in runs}
        try:
            for r in range(args.rounds):
                for label, (tree, mode) in runs.items():
                    work = tmp / f"{label.replace('/', '-')}-{r}"
                    work.mkdir()
                    row = one_round(tree, work, args, double_url, "" if mode == "free" else mode)
                    rounds[label].append(row)
                    print(f"round {r + 1} {label:13} " + "  ".join(
                        f"c={k[1:]}: {v['jobs_per_s']:.0f} jobs/s, CPU ms/job {v['cpu_ms_per_job']['total']:.2f} "
                        f"(relay {v['cpu_ms_per_job']['relay']:.2f} provider {v['cpu_ms_per_job']['provider']:.2f} "
                        f"client {v['cpu_ms_per_job']['client']:.2f}"
                        + (f"; nwc {v['cpu_ms_per_job']['nwc']:.2f}" if "nwc" in v["cpu_ms_per_job"] else "")
                        + f"), median {v['median_ms']:.1f} ms" for k, v in row.items()), flush=True)
        finally:
            double.stop()
    result: dict[str, Any] = {"params": vars(args), "median": {name: median_rows(rs) for name, rs in rounds.items()},
                              "rounds": rounds}
    med = result["median"]
    for name in trees:
        for pay in args.pays:  # paid over free: same tree, same run
            paid, free = med[f"{name}/{pay}"], med[f"{name}/free"]
            ratio = {key: {"jobs_per_s": round(paid[key]["jobs_per_s"] / free[key]["jobs_per_s"], 3),
                           "added_median_ms": round(paid[key]["median_ms"] - free[key]["median_ms"], 2),
                           "paired": paired(rounds[f"{name}/{pay}"], rounds[f"{name}/free"], key)}
                     for key in paid}
            result.setdefault("ratio_paid_over_free", {})[f"{name}/{pay}"] = ratio
            print(f"{name} {pay}: paid/free jobs/s " + ", ".join(
                f"c={k[1:]} x{v['jobs_per_s']:.2f} ({v['added_median_ms']:+.1f} ms median; per round "
                f"{spread(v['paired'])})" for k, v in ratio.items()))
    if args.baseline:
        for mode in modes:
            suffix = f"/{mode}" if mode else ""
            base, cur = med[f"baseline{suffix}"], med[f"current{suffix}"]
            ratio = {key: {"jobs_per_s": round(cur[key]["jobs_per_s"] / base[key]["jobs_per_s"], 3),
                           **{f"cpu_{k}": round(cur[key]["cpu_ms_per_job"][k] / base[key]["cpu_ms_per_job"][k], 3)
                              for k in cur[key]["cpu_ms_per_job"]},
                           "paired_cpu_total": paired(rounds[f"current{suffix}"], rounds[f"baseline{suffix}"], key,
                                                      "cpu_total")}
                     for key in cur}
            result.setdefault("ratio_current_over_baseline", {})[mode or "free"] = ratio
            for key, r in ratio.items():
                print(f"{mode or 'free'} {key}: current/baseline jobs/s x{r['jobs_per_s']:.2f}, CPU/job total "
                      f"x{r['cpu_total']:.2f} (relay x{r['cpu_relay']:.2f} provider x{r['cpu_provider']:.2f} "
                      f"client x{r['cpu_client']:.2f}); CPU/job total per round {spread(r['paired_cpu_total'])}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
