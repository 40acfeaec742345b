"""Several workers on one job store (`pylon serve --workers`): the claim at intake, and the take-over
of an exited worker's jobs — every kind of job that needs care, exactly once, and never from a
worker that is still alive. Real SQLite files; a real exited process stands for the dead worker."""

from __future__ import annotations

import subprocess
import sys
import time

from pylon.provider.claims import worker_alive, worker_id
from pylon.provider.jobstore import JobStore


def _dead_worker(slot: int = 0) -> str:
    """The id a worker had whose process has exited (a real pid, reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    wid = worker_id(slot, proc.pid)
    proc.wait()
    return wid


def _seen(store: JobStore, rid: str) -> bool:
    return store.record_seen(rid, "cust", int(time.time()), "{}", model="m")


def test_the_claim_is_the_insert_one_worker_wins(tmp_path):
    a = JobStore(tmp_path / "p.sqlite", owner=worker_id(0))
    b = JobStore(tmp_path / "p.sqlite", owner="w1:1:x")
    try:
        wins = [_seen(a, "r1"), _seen(b, "r1")]
        assert wins == [True, False]
        assert a.get("r1").claimed_by == a.owner
        assert [r.request_id for r in a.jobs_in(["seen"])] == ["r1"] and b.jobs_in(["seen"]) == []
    finally:
        a.close()
        b.close()


def test_liveness_is_the_pid(tmp_path):
    assert worker_alive(worker_id(0))
    assert not worker_alive(_dead_worker())
    assert worker_alive("not-an-id")  # unreadable: never taken over


def test_an_exited_workers_jobs_are_taken_over_once(tmp_path):
    dead = JobStore(tmp_path / "p.sqlite", owner=_dead_worker())
    dead.recover()  # registers it
    for rid in ("seen", "quoted", "awaiting", "paid", "running", "published", "twice", "key", "refund", "finished"):
        _seen(dead, rid)
    dead.transition("quoted", "quoted")
    for rid in ("awaiting", "paid"):
        dead.transition(rid, "quoted")
        dead.transition(rid, "awaiting_payment", payment_hash="h" + rid, invoice_expires_at=int(time.time()) + 600)
    dead.transition("paid", "paid", paid_at=time.time())
    for rid in ("running", "published", "twice", "key", "refund", "finished"):
        assert dead.claim_processing(rid)
    dead.mark_result_published("published", "ev1", prompt_tokens=1, completion_tokens=1)
    dead._db.execute("UPDATE jobs SET status = 'processing' WHERE request_id = 'published'")  # crashed before 'done'
    dead._db.execute("UPDATE jobs SET attempts = 2 WHERE request_id = 'twice'")
    dead.mark_result_ready("key", '{"id":"ev2"}', key_invoice=("lnbc1", "hkey", int(time.time()) + 600))
    dead.mark_result_published("key", "ev2", prompt_tokens=1, completion_tokens=1)
    dead._db.execute("UPDATE jobs SET status = 'error', paid_at = 1, refund_status = 'paying', refund_hash = 'r'"
                     " WHERE request_id = 'refund'")
    dead.mark_result_published("finished", "ev3", prompt_tokens=1, completion_tokens=1)
    dead.close()

    alive_a = JobStore(tmp_path / "p.sqlite", owner=worker_id(1))
    alive_b = JobStore(tmp_path / "p.sqlite", owner=worker_id(2))
    try:
        # two running workers' periodic checks: the first to look takes everything; the second finds nothing left
        first = alive_a.take_over()
        assert alive_b.take_over() is None
        assert first is not None
        assert sorted(r.request_id for r in first.rows) == ["awaiting", "paid", "quoted", "running", "seen"]
        assert [k[0] for k in first.key_invoices] == ["key"]
        assert first.refunds_paying
        owners = {r.request_id: r.claimed_by for r in (alive_a.get(x) for x in
                  ("seen", "quoted", "awaiting", "paid", "running", "published", "twice", "key", "refund", "finished"))}
        assert set(owners.values()) == {alive_a.owner}
        assert alive_a.status("published") == "done"  # its result was out: settled, not re-run
        assert alive_a.status("twice") == "error"  # interrupted twice: not run a third time
        assert alive_a.claim_processing("running", rerun=True)  # the re-run once
        assert alive_a.refunds_in("paying")[0].request_id == "refund"
        assert alive_b.refunds_in("paying") == [] and alive_b.unpaid_key_invoices() == []
        assert [k[0] for k in alive_a.unpaid_key_invoices()] == ["key"]
    finally:
        alive_a.close()
        alive_b.close()


def test_a_live_workers_jobs_are_never_taken(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another live worker
    busy = JobStore(tmp_path / "p.sqlite", owner=worker_id(0, sleeper.pid))
    other = JobStore(tmp_path / "p.sqlite", owner=worker_id(1))
    try:
        busy.recover()
        _seen(busy, "r1")
        assert busy.claim_processing("r1")
        other.recover()
        assert other.take_over() is None
        assert other.recover() == []  # a restart of the other worker does not take it either
        assert busy.get("r1").claimed_by == busy.owner
        sleeper.kill()
        sleeper.wait()
        assert other.take_over() is not None  # gone now: taken
        assert busy.get("r1").claimed_by == other.owner
    finally:
        sleeper.kill()
        sleeper.wait()
        busy.close()
        other.close()


def test_a_single_provider_store_is_adopted_by_the_first_worker(tmp_path):
    single = JobStore(tmp_path / "p.sqlite")
    _seen(single, "old")
    assert single.get("old").claimed_by is None
    single.close()
    worker = JobStore(tmp_path / "p.sqlite", owner=worker_id(0))
    try:
        assert [r.request_id for r in worker.recover()] == ["old"]
        assert worker.get("old").claimed_by == worker.owner
    finally:
        worker.close()



_OPEN_AT_ONCE = """
import sys, time
sys.path.insert(0, sys.argv[3])
from pylon.provider.jobstore import JobStore
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
JobStore(sys.argv[1], owner="w0:1:").close()
"""


def _open_at_once(path, processes: int = 4) -> list[int]:
    """`processes` real processes open the store at the same instant (as N workers start)."""
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    start = time.time() + 1.5  # after every interpreter has started
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(path), str(start), repo],
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        codes.append(p.returncode)
    return codes


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path):
    _open_at_once(tmp_path / "new.sqlite")
    with JobStore(tmp_path / "new.sqlite") as store:
        assert store.get("nothing") is None


def test_workers_upgrading_an_old_store_at_once_all_succeed(tmp_path):
    """A store from before workers (no claimed_by column): each worker adds it or finds it added."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    with JobStore(path) as store:
        _seen(store, "old-job")
    db = sqlite3.connect(path)
    db.execute("DROP INDEX jobs_by_worker")
    db.execute("DROP INDEX jobs_by_payment_hash")
    db.execute("ALTER TABLE jobs DROP COLUMN claimed_by")
    db.execute("CREATE INDEX jobs_payment_hash ON jobs(payment_hash)")  # as stores before partial indexes had
    db.commit()
    db.close()
    _open_at_once(path)
    with JobStore(path, owner=worker_id(0)) as store:
        assert [r.request_id for r in store.recover()] == ["old-job"]
        indexes = {row[0] for row in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_by_worker", "jobs_by_payment_hash"} <= indexes
        assert not indexes & {"jobs_claimed_by", "jobs_payment_hash"}
        for sql, arg in (("SELECT * FROM jobs WHERE payment_hash = ?", "ab" * 32),
                         ("SELECT * FROM jobs WHERE claimed_by = ?", worker_id(0))):
            plan = str(store._db.execute("EXPLAIN QUERY PLAN " + sql, (arg,)).fetchall())
            assert "USING INDEX jobs_by_" in plan, plan
