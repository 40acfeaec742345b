"""A paid job over NWC, step by step as the relay sees it: which events one job costs, and
when each arrives, for this tree against a baseline commit in the same run.

    .venv/bin/python bench/nwc_timeline.py [--baseline REF] [--jobs 40] [--blocks 3] [--first]

Per tree: `pylon relay`, `pylon serve` (1 sat per job) against the instant OpenAI double, two
`pylon wallet serve-nwc` processes (customer and provider, each in front of its account of one
dev ledger) and a load generator (PylonClient) asking one job at a time. A plain websocket
subscriber on the same relay notes the arrival time of every event. Jobs follow each other,
so each job's events are read in order from its request (kind 5050): the NWC requests
(23194), answers (23195), notifications (23197, and the NIP-04 twin 23196), feedback (7000,
e.g. payment-required) and the result (6050). Blocks alternate baseline/current (A B A B ...) so drift on this shared machine hits
both; per step, the median over the jobs of the most common sequence; and the median
whole-job latency the load generator measured, with the ratio current/baseline.

Paid for the key (a hold invoice: the default where the provider's wallet offers them), or
with `--first` paid first (`payment-required`; the provider waits for `payment_received`, or
polls where the tree has no such notification). Results: bench/results/nwc_timeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from hot_path import load_generator, start_stack, trees_under_test  # noqa: E402
from jobs import Proc  # noqa: E402

RESULTS = REPO / "bench" / "results" / "nwc_timeline.json"
NAMES = {5050: "job request", 7000: "feedback", 6050: "result", 23194: "NWC request", 23195: "NWC answer",
         23196: "notification (NIP-04 twin)", 23197: "notification"}


def _roles(customer_uri: str, provider_uri: str) -> dict[str, str]:
    """Who signs what: each side's NWC client key (the URI's secret) and its service's key."""
    from pylon.nostr.keys import Keys
    from wallet.nwc_proto import ConnectionUri

    roles = {}
    for side, uri in (("customer", customer_uri), ("provider", provider_uri)):
        conn = ConnectionUri.parse(uri)
        roles[Keys.from_hex(conn.secret).public_key] = f"by the {side}"
        roles[conn.wallet_pubkey] = f"by the {side}'s NWC service"
    return roles


async def _note_events(url: str, seen: list[tuple[float, int, str]], stop: asyncio.Event) -> None:
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps(["REQ", "timeline", {"since": int(time.time()) - 5}]))
        while not stop.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
            except asyncio.TimeoutError:
                continue
            if msg[0] == "EVENT":
                seen.append((time.monotonic(), msg[2]["kind"], msg[2]["pubkey"]))


def one_block(tree: Path, tmp: Path, double_url: str, jobs: int, first: bool) -> dict[str, Any]:
    """One tree's processes; `jobs` paid jobs one at a time; the events each job caused."""
    stack = start_stack(tree, tmp, double_url, "nwc")
    try:
        with load_generator(tree, tmp, stack, [[1, jobs]], first) as gen:
            assert gen.stdin is not None and gen.stdout is not None
            json.loads(gen.stdout.readline())  # {"start": 1}: warmed up

            async def run() -> tuple[dict[str, Any], list[tuple[float, int, str]]]:
                seen: list[tuple[float, int, str]] = []
                stop = asyncio.Event()
                noting = asyncio.create_task(_note_events(stack.relay_url, seen, stop))
                await asyncio.sleep(0.3)
                assert gen.stdin is not None and gen.stdout is not None
                gen.stdin.write("\n")
                gen.stdin.flush()
                done = json.loads(await asyncio.to_thread(gen.stdout.readline))
                await asyncio.sleep(0.3)
                stop.set()
                await noting
                return done, seen

            done, seen = asyncio.run(run())
            gen.stdin.write("\n")
            gen.stdin.flush()
    finally:
        stack.stop()
    return {"median_ms": done["median_ms"], "chains": _chains(seen, _roles(stack.customer_wallet, stack.provider_wallet))}


def _chains(seen: list[tuple[float, int, str]], roles: dict[str, str]) -> list[list[tuple[str, float]]]:
    """Each job's events in order, as (step, ms since its request); steps name who sent what."""
    chains: list[list[tuple[str, float]]] = []
    start = 0.0
    for t, kind, pubkey in seen:
        if kind == 5050:
            start = t
            chains.append([])
        if not chains or kind not in NAMES:
            continue
        by = "" if kind in (5050, 6050, 7000) else " " + roles.get(pubkey, "by someone else")
        chains[-1].append((NAMES[kind] + by, round((t - start) * 1000, 3)))
    return chains[2:]  # the first jobs still warm caches


def summarise(chains: list[list[tuple[str, float]]]) -> dict[str, Any]:
    """Steps (medians) of the most common sequence, and the events per job by kind."""
    by_seq: dict[tuple[str, ...], list[list[float]]] = collections.defaultdict(list)
    per_kind: collections.Counter[str] = collections.Counter()
    for chain in chains:
        by_seq[tuple(step for step, _ in chain)].append([ms for _, ms in chain])
        for step, _ in chain:
            per_kind[step.split(" by ", 1)[0]] += 1
    seq, rows = max(by_seq.items(), key=lambda kv: len(kv[1]))
    return {"jobs": len(chains), "of_this_sequence": len(rows),
            "events_per_job": {k: round(v / max(len(chains), 1), 2) for k, v in sorted(per_kind.items())},
            "steps": [(step, round(statistics.median(r[i] for r in rows), 2)) for i, step in enumerate(seq)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="", help="git ref to compare against (default: none)")
    ap.add_argument("--jobs", type=int, default=40, help="jobs per block")
    ap.add_argument("--blocks", type=int, default=3, help="blocks per tree, alternating")
    ap.add_argument("--first", action="store_true", help="pay first (payment-required) instead of for the key")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pylon-bench-nwc-") as tmpdir:
        tmp = Path(tmpdir)
        trees = trees_under_test(args.baseline, tmp)
        double = Proc([sys.executable, str(REPO / "tests" / "peers" / "openai_double.py"), "--port", "0",
                       "--latency-ms", "0"])
        double_url = double.start("http://")
        medians: dict[str, list[float]] = {name: [] for name in trees}
        chains: dict[str, list[list[tuple[str, float]]]] = {name: [] for name in trees}
        try:
            for b in range(args.blocks):
                for name, tree in trees.items():
                    work = tmp / f"{name}-{b}"
                    work.mkdir()
                    block = one_block(tree, work, double_url, args.jobs, args.first)
                    medians[name].append(block["median_ms"])
                    chains[name] += block["chains"]
                    print(f"block {b + 1} {name:8} median {block['median_ms']:.1f} ms per paid job", flush=True)
        finally:
            double.stop()
    out: dict[str, Any] = {"flow": "pay first" if args.first else "pay for the key (hold invoice)", "trees": {}}
    for name in trees:
        s = summarise(chains[name])
        out["trees"][name] = {"median_ms": round(statistics.median(medians[name]), 2), **s}
        print(f"\n{name}: median {out['trees'][name]['median_ms']:.1f} ms per paid job (median of blocks); "
              f"{s['of_this_sequence']} of {s['jobs']} jobs in this order; events per job: "
              + ", ".join(f"{k} {v:g}" for k, v in s["events_per_job"].items()))
        for step, ms in s["steps"]:
            print(f"  {ms:7.2f} ms  {step}")
    if args.baseline:
        ratio = out["trees"]["current"]["median_ms"] / out["trees"]["baseline"]["median_ms"]
        out["current_over_baseline"] = round(ratio, 3)
        per_block = [c / b for c, b in zip(medians["current"], medians["baseline"])]
        print(f"\ncurrent/baseline latency x{ratio:.2f} (per block x{min(per_block):.2f}-x{max(per_block):.2f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
