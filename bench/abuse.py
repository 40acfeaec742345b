"""Abuse figures for the relay: peak RSS and the honest client's p50/p99 during each attack,
as ratios against a quiet run measured in the same process run.

    .venv/bin/python bench/abuse.py                 # this tree
    .venv/bin/python bench/abuse.py --before b97d8c1  # also an older commit, side by side

`--before REV` extracts that commit's sources with `git archive` into a temp folder and runs
the same attacks against a relay started from there (only the relay runs from the old
sources; the attackers and the honest client are this tree's). The attacks are the ones
tests/abuse asserts bounds for; here nothing is asserted, figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.abuse import relay_attacks  # noqa: E402
from tests.abuse.harness import RelayProcess  # noqa: E402

ATTACKS = {
    "slow consumer (20 REQs never read, 300 x 60 KB events)": relay_attacks.slow_consumer,
    "index amplification (4 conns x 200 REQs x 2,000 tag values)": relay_attacks.index_amplification,
    "query stall (2 conns x 10 REQs of 200 filters + 10 COUNTs, 3,000 stored)": relay_attacks.query_stall,
    "poisoned batch (300 events with expiration 10^23)": relay_attacks.poison_batch,
}


def extract(rev: str, into: Path) -> Path:
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "nexus_relay", "pylon"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


async def run_side(label: str, src: Path | None) -> dict[str, dict]:
    results: dict[str, dict] = {}
    async with RelayProcess(src=src) as relay:
        results["quiet"] = await relay_attacks.baseline(relay)
    for name, attack in ATTACKS.items():
        async with RelayProcess(src=src) as relay:
            try:
                results[name] = await asyncio.wait_for(attack(relay), 180)
            except Exception as exc:  # the old relay may not survive an attack: say so, go on
                results[name] = {"failed": f"{type(exc).__name__}: {exc}"[:120],
                                 "peak_rss_mb": round(relay.peak_mb, 1)}
            tracebacks = relay.log().count("Traceback")
            results[name]["tracebacks_in_log"] = tracebacks
    quiet = results["quiet"]
    print(f"\n== {label} ==")
    print(f"quiet: RSS {quiet['peak_rss_mb']} MB, honest p50 {quiet['honest_p50_ms']} ms, p99 {quiet['honest_p99_ms']} ms")
    for name in ATTACKS:
        r = results[name]
        if "failed" in r:
            print(f"- {name}: FAILED ({r['failed']}), peak RSS {r['peak_rss_mb']} MB, tracebacks {r['tracebacks_in_log']}")
            continue
        ratio = r["honest_p99_ms"] / quiet["honest_p99_ms"] if quiet["honest_p99_ms"] else float("nan")
        print(f"- {name}: peak RSS {r['peak_rss_mb']} MB ({r['peak_rss_mb'] / quiet['peak_rss_mb']:.1f}x quiet), "
              f"honest p50 {r['honest_p50_ms']} ms, p99 {r['honest_p99_ms']} ms ({ratio:.1f}x quiet), "
              f"honest lost {r['honest_lost']}/{r['honest_lost'] + r['honest_rounds']}, "
              f"tracebacks {r['tracebacks_in_log']}")
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="also run the attacks against this git revision's relay")
    args = parser.parse_args()
    if args.before:
        with tempfile.TemporaryDirectory(prefix="abuse-before-") as tmp:
            await run_side(f"before ({args.before})", extract(args.before, Path(tmp)))
    await run_side("after (this tree)", None)
    print("\nstrfry's documented limits, for comparison: maxWebsocketPayloadSize 131072, maxReqFilterSize 200,"
          " maxFilterLimit 500, maxSubsPerConnection 20, queryTimesliceBudgetMicroseconds 10000,"
          " maxEventSize 65536, rejectEventsNewerThanSeconds 900, maxNumTags 2000, maxTagValSize 1024")


if __name__ == "__main__":
    asyncio.run(main())
