"""A free job's writes in the provider's job store, as it is against the indexes it had, in one run.

    .venv/bin/python bench/jobstore_writes.py [--jobs 3000] [--rounds 4]

A free job is four statements, each its own commit (pylon.provider.jobstore): record_seen
(the INSERT that claims it), claim_processing, mark_result_ready (the signed result, before
it is published) and mark_result_published. This times them per job on a real store with
realistic row sizes, `current` against `full indexes` (the same store with the full indexes on
payment_hash and claimed_by that stores had before they became partial), alternating rounds;
medians, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pylon.provider.jobstore import JobStore  # noqa: E402

REQUEST = ('{"id":"%s","pubkey":"' + "a" * 64 + '","created_at":1700000000,"kind":5050,"tags":[["i","Question 1:'
           ' tell me about 1.","text"],["param","model","m"],["param","max_tokens","16"]],"content":"","sig":"'
           + "b" * 128 + '"}')
RESULT = ('{"id":"%s","pubkey":"' + "c" * 64 + '","created_at":1700000000,"kind":6050,"tags":[["request",'
          + '"x"' * 100 + '],["e","' + "d" * 64 + '"],["usage","10","16"]],"content":"' + "word " * 20
          + '","sig":"' + "b" * 128 + '"}')


def full_indexes(store: JobStore) -> None:
    store._db.executescript("DROP INDEX jobs_by_payment_hash; DROP INDEX jobs_by_worker;"
                            "CREATE INDEX jobs_payment_hash ON jobs(payment_hash);"
                            "CREATE INDEX jobs_claimed_by ON jobs(claimed_by);")


def one_round(jobs: int, old: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="pylon-bench-jobstore-") as tmp, JobStore(Path(tmp) / "p.sqlite") as store:
        if old:
            full_indexes(store)
        now = int(time.time())
        per_job = []
        for _ in range(jobs):
            rid = os.urandom(32).hex()
            t0 = time.perf_counter()
            store.record_seen(rid, "a" * 64, now, REQUEST % rid, model="m")
            store.claim_processing(rid, amount_msat=0, model="m")
            store.mark_result_ready(rid, RESULT % rid)
            store.mark_result_published(rid, "e" * 64, prompt_tokens=10, completion_tokens=16, amount_msat=0)
            per_job.append(time.perf_counter() - t0)
        return statistics.median(per_job) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    rows: dict[str, list[float]] = {"full indexes": [], "current": []}
    for r in range(args.rounds):
        for label in (["full indexes", "current"] if r % 2 == 0 else ["current", "full indexes"]):
            rows[label].append(one_round(args.jobs, old=label == "full indexes"))
            print(f"round {r + 1} {label:12} {rows[label][-1]:6.1f} us per free job", flush=True)
    old, new = statistics.median(rows["full indexes"]), statistics.median(rows["current"])
    print(f"median: full indexes {old:.1f} us, current {new:.1f} us per free job (x{new / old:.2f})")


if __name__ == "__main__":
    main()
