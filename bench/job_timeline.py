"""Where one job's added latency goes: a timeline of one job at a time, step by step.

    .venv/bin/python bench/job_timeline.py [--jobs 100] [--latency-ms 20] [--pay dev]

Relay, provider and backend (the OpenAI server double with a fixed latency) run as processes
on 127.0.0.1 as in `bench/jobs.py`; this script is the customer (PylonClient) and asks one job
at a time. Each process notes the monotonic clock (shared by all processes of this machine)
at fixed points on a job's way: a frame written, a frame read, the event handled, the job
store's writes, the backend call, the result built and published. At one job at a time the
points of one job follow each other, so each job's chain is read in order: each step is the
first note of its point after the previous step's.

How the points are noted: the child processes get a `sitecustomize.py` (written into a
temporary folder on their PYTHONPATH) that wraps the named functions; this process wraps its
own the same way. Wrapping costs a few microseconds per point, so the total is a little above
`bench/jobs.py`'s; read the steps, not the total. This is a profile of the path, not a test:
no process's code is changed.

Prints the median of each step over the jobs, then the sums by where the time is spent
(transport between processes, relay, provider, customer, backend), and the direct backend
call's median for comparison. `--pay dev` prices each job at 1 sat, paid for the key with the
dev wallet (customer and provider hold accounts of one dev ledger): the chain then has the
provider's invoice, and the customer's payment (intent, wallet, paid) between the sealed
result's arrival and the answer. Results: bench/results/job_timeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from jobs import PYLON, Proc  # noqa: E402

RESULTS = REPO / "bench" / "results" / "job_timeline.json"

# (process, module, class, method, point): the points noted, by process; a coroutine
# function notes two, point_start and point_end
POINTS = [
    ("relay", "nexus_relay.server", "NexusRelay", "_on_frame", "relay_read"),
    ("relay", "nexus_relay.server", "NexusRelay", "_on_event", "relay_event"),
    ("relay", "nexus_relay.server", "NexusRelay", "_fanout", "relay_fanout"),
    ("relay", "nexus_relay.connection", "Connection", "_flush", "relay_write"),
    ("provider", "pylon.relay.runner", "RelayRunner", "_handle", "provider_read"),
    ("provider", "pylon.provider.provider", "Provider", "_on_request", "provider_request"),
    ("provider", "pylon.provider.jobstore", "JobStore", "record_seen", "provider_seen"),
    ("provider", "pylon.provider.jobstore", "JobStore", "claim_processing", "provider_claim"),
    ("provider", "pylon.provider.backends.http1", "Http1Pool", "post", "backend"),  # async: _start/_end
    ("provider", "pylon.provider.keysale", "KeySales", "invoice", "provider_invoice"),  # async
    ("provider", "pylon.nostr.event", "Event", "build", "provider_build"),
    ("provider", "pylon.provider.jobstore", "JobStore", "mark_result_ready", "provider_stored"),
    ("provider", "pylon.relay.pool", "RelayPool", "publish", "provider_publish"),  # async
    ("provider", "pylon.relay.runner", "RelayRunner", "_write_framed", "provider_write"),
    ("client", "pylon.relay.pool", "RelayPool", "publish", "client_publish"),  # async
    ("client", "pylon.relay.runner", "RelayRunner", "_write_framed", "client_write"),
    ("client", "pylon.relay.runner", "RelayRunner", "_handle", "client_read"),
    ("client", "pylon.customer.inbox", "JobInbox", "offer", "client_result"),
    ("client", "pylon.customer.budget", "Budget", "pay", "client_pay"),  # async
    ("client", "wallet.dev", "DevWallet", "pay_invoice", "client_wallet"),  # async
    ("client", "pylon.customer.client", "PylonClient", "_outcome", "client_answer"),
]

# one job's way, in order: (point, where the time from the previous point to this one went)
_TO_PROVIDER = [
    ("client_publish_start", None),
    ("client_write", "client"), ("relay_read", "transport"), ("relay_event", "relay"),
    ("relay_fanout", "relay"), ("relay_write", "relay"), ("provider_read", "transport"),
    ("provider_request", "provider"), ("provider_seen", "provider"), ("provider_claim", "provider"),
    ("backend_start", "provider"), ("backend_end", "backend"),
]
_TO_CUSTOMER = [
    ("provider_build", "provider"), ("provider_stored", "provider"), ("provider_publish_start", "provider"),
    ("provider_write", "provider"), ("relay_read", "transport"), ("relay_event", "relay"),
    ("relay_fanout", "relay"), ("relay_write", "relay"), ("client_read", "transport"),
    ("client_result", "client"),
]
CHAIN = _TO_PROVIDER + _TO_CUSTOMER + [("client_answer", "client")]
PAID_CHAIN = (_TO_PROVIDER + [("provider_invoice_start", "provider"), ("provider_invoice_end", "provider invoice")]
              + _TO_CUSTOMER + [("client_pay_start", "client"), ("client_wallet_start", "client payment"),
                                ("client_wallet_end", "client wallet"), ("client_pay_end", "client payment"),
                                ("client_answer", "client")])

# the hooks each process installs (this text becomes the children's sitecustomize.py)
HOOKS = r'''
import atexit, importlib, inspect, os, signal, time

def install(role, points, out_path, at_exit=True):
    notes = []
    def wrap(module, cls_name, method, point):
        cls = getattr(importlib.import_module(module), cls_name)
        original = getattr(cls, method)
        clock = time.monotonic_ns
        if inspect.iscoroutinefunction(original):
            async def noted(*args, **kwargs):
                notes.append((point + "_start", clock()))
                try:
                    return await original(*args, **kwargs)
                finally:
                    notes.append((point + "_end", clock()))
        else:
            def noted(*args, **kwargs):
                notes.append((point, clock()))
                return original(*args, **kwargs)
        setattr(cls, method, noted)
    for proc, module, cls_name, method, point in points:
        if proc == role:
            wrap(module, cls_name, method, point)
    def write():
        with open(out_path, "w") as fh:
            fh.writelines(f"{p} {t}\n" for p, t in notes)
    if at_exit:  # a child: its notes are written when it stops
        atexit.register(write)
        signal.signal(signal.SIGTERM, lambda *_: (write(), os._exit(0)))
    return write

if os.environ.get("PYLON_TIMELINE"):
    import json
    _role, _out = os.environ["PYLON_TIMELINE"].split(",", 1)
    install(_role, json.loads(os.environ["PYLON_TIMELINE_POINTS"]), _out)
'''


def read_notes(paths: list[Path]) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            point, t = line.split()
            times.setdefault(point, []).append(int(t))
    for lst in times.values():
        lst.sort()
    return times


def chains(times: dict[str, list[int]], chain: list[tuple[str, str | None]], skip: int) -> list[list[float]]:
    """Each job's step durations (ms) along `chain`, from each customer publish."""
    out = []
    for t0 in times.get("client_publish_start", [])[skip:]:
        t, steps = t0, []
        for point, _ in chain[1:]:
            lst = times.get(point, [])
            i = bisect.bisect_left(lst, t)
            if i == len(lst):
                break
            steps.append((lst[i] - t) / 1e6)
            t = lst[i]
        else:
            out.append(steps)
    return out


async def direct_median_ms(url: str, n: int) -> float:
    from pylon.provider.backends import ChatRequest, OpenAIBackend
    async with OpenAIBackend(url) as backend:
        model = (await backend.list_models())[0]
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await backend.complete_chat(ChatRequest(model=model, messages=[{"role": "user", "content": f"q {i}"}],
                                                    max_tokens=16, temperature=0.0))
            lat.append(time.perf_counter() - t0)
        return statistics.median(lat[5:]) * 1e3


async def customer(relay: str, n: int, wallet_uri: str) -> None:
    from pylon.customer.client import PylonClient
    from pylon.nostr.keys import Keys
    kwargs: dict = {}
    if wallet_uri:
        from wallet import open_wallet
        kwargs = {"wallet": open_wallet(wallet_uri), "max_msat": 10_000, "daily_budget_msat": 10**12}
    async with PylonClient([relay], keys=Keys.generate(), **kwargs) as client:
        for i in range(n):
            await client.ask(f"Question {i}: tell me about {i}.", max_tokens=16, temperature=0.0, timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="the double's fixed latency")
    ap.add_argument("--pay", choices=["dev"], help="1 sat per job, paid for the key with the dev wallet")
    args = ap.parse_args()
    chain = PAID_CHAIN if args.pay else CHAIN
    warm = 5
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        hooks = tmp / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(HOOKS)
        points = json.dumps(POINTS)
        base = {"PYTHONPATH": f"{REPO}:{hooks}", "PYLON_TIMELINE_POINTS": points}
        double = Proc([sys.executable, str(REPO / "tests/peers/openai_double.py"), "--port", "0",
                       "--latency-ms", str(args.latency_ms)])
        relay = Proc([PYLON, "relay", "--port", "0", "--db", str(tmp / "relay.sqlite")],
                     env={**base, "PYLON_HOME": str(tmp / "rh"), "PYLON_TIMELINE": f"relay,{tmp / 'relay.notes'}"})
        provider: Proc | None = None
        try:
            durl = double.start("http://")
            direct = asyncio.run(direct_median_ms(durl, 50))
            rurl = relay.start("ws://")
            serve = [PYLON, "serve", "--relay", rurl, "--backend", durl]
            wallet_uri = ""
            if args.pay:
                ledger = tmp / "ledger.sqlite"
                wallet_uri = f"dev://{ledger}?account=customer"
                subprocess.run([PYLON, "wallet", "fund", "100000000", "--wallet", wallet_uri], check=True,
                               capture_output=True, env={**os.environ, "PYLON_HOME": str(tmp / "ch")})
                serve += ["--price-msat", "1000", "--wallet", f"dev://{ledger}?account=provider"]
            provider = Proc(serve,
                            env={**base, "PYLON_HOME": str(tmp / "ph"),
                                 "PYLON_TIMELINE": f"provider,{tmp / 'provider.notes'}"})
            provider.start("serving as")
            os.environ["PYLON_HOME"] = str(tmp / "ch")
            hooks_ns: dict = {}
            exec(HOOKS, hooks_ns)  # the same hooks, in this process
            write_notes = hooks_ns["install"]("client", POINTS, str(tmp / "client.notes"), at_exit=False)
            t0 = time.perf_counter()
            asyncio.run(customer(rurl, args.jobs + warm, wallet_uri))
            wall = time.perf_counter() - t0
            write_notes()
        finally:
            if provider is not None:
                provider.stop()
            relay.stop()
            double.stop()
        times = read_notes([tmp / "relay.notes", tmp / "provider.notes", tmp / "client.notes"])
    jobs = chains(times, chain, warm)
    if os.environ.get("PYLON_TIMELINE_DEBUG"):
        print({k: len(v) for k, v in times.items()})
    if not jobs:
        sys.exit("no complete job timeline was noted (did a hooked function change its name?)")
    print(f"{len(jobs)} {'paid ' if args.pay else ''}jobs one at a time, double latency {args.latency_ms:.0f} ms; "
          f"{wall / (args.jobs + warm) * 1e3:.1f} ms per job")
    print(f"{'step':44} {'median ms':>10}")
    medians = [statistics.median(col) for col in zip(*jobs)]
    by_place: dict[str, float] = {}
    rows = []
    for (point, place), (prev, _), med in zip(chain[1:], chain, medians):
        print(f"{prev + ' -> ' + point:44} {med:10.3f}   {place}")
        by_place[place or ""] = by_place.get(place or "", 0.0) + med
        rows.append({"from": prev, "to": point, "where": place, "median_ms": round(med, 3)})
    total = statistics.median(sum(j) for j in jobs)
    added = total - direct
    print(f"\nmedian job, publish to answer: {total:.2f} ms; the backend called directly: {direct:.2f} ms; "
          f"added by Pylon: {added:.2f} ms")
    print("sums of the step medians by where the time went: "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(by_place.items(), key=lambda kv: -kv[1])))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"jobs": len(jobs), "latency_ms": args.latency_ms, "pay": args.pay or "",
                                   "steps": rows,
                                   "by_place_ms": {k: round(v, 3) for k, v in by_place.items()},
                                   "total_ms": round(total, 3), "direct_ms": round(direct, 3),
                                   "added_ms": round(added, 3)}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
