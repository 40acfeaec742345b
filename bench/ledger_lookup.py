"""The receipts ledger's duplicate check before each payment, as the ledger grows, in one run.

    .venv/bin/python bench/ledger_lookup.py [--sizes 1000,10000,100000] [--checks 30]

Before paying, `Ledger.record_intent` looks for a live receipt of the same job or the same
payment hash. Written as one query with `job_id = ? OR payment_hash = ?`, SQLite could not use
the two partial unique indexes and scanned every receipt ever written, under the ledger's
write lock; it is now two indexed lookups. This fills a real ledger with N paid receipts and
times both forms (medians), `old` being the query the ledger ran before, as the baseline.
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

from pylon.customer.ledger import _COLS, Ledger  # noqa: E402

OLD = f"SELECT {_COLS} FROM receipts WHERE status != 'failed' AND (job_id = ? OR payment_hash = ?) ORDER BY id DESC LIMIT 1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--checks", type=int, default=30)
    args = ap.parse_args()
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="pylon-bench-ledger-") as tmp, Ledger(Path(tmp) / "l.sqlite") as led:
            db = led._db
            db.execute("BEGIN")
            db.executemany("INSERT INTO receipts(job_id, provider, payment_hash, amount_msat, bolt11, status, created_at,"
                           " updated_at) VALUES (?, 'p', ?, 1, 'x', 'paid', 1.0, 1.0)",
                           ((f"job{i}", os.urandom(32).hex()) for i in range(n)))
            db.execute("COMMIT")
            times: dict[str, list[float]] = {"old": [], "new": []}
            for i in range(args.checks):
                job, payment_hash = f"new{i}", os.urandom(32).hex()
                t0 = time.perf_counter()
                db.execute(OLD, (job, payment_hash)).fetchone()
                t1 = time.perf_counter()
                assert (led._one(db, "job_id = ? AND status != 'failed'", (job,))
                        or led._one(db, "payment_hash = ? AND status != 'failed'", (payment_hash,))) is None
                t2 = time.perf_counter()
                times["old"].append(t1 - t0)
                times["new"].append(t2 - t1)
            old, new = (statistics.median(times[k]) * 1e6 for k in ("old", "new"))
            print(f"{n:>7} receipts: duplicate check old {old:8.0f} us, now {new:6.1f} us (x{new / old:.3f})", flush=True)


if __name__ == "__main__":
    main()
