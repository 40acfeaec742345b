"""Group commit of the receipts ledger's writes (pylon.group_commit, issue 15 paid path).

Writes queued together share one transaction and one fsync, and still behave one by one:
each caller gets its own outcome, only once the batch is committed (another connection sees
the row when the caller resumes); limits and exactly-once checks see the earlier writes of
the same batch; a batch SQLite aborts is rerun write by write. Real SQLite files, real
threads; a write is held on a threading.Event where a test needs several to queue up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from pylon.customer.invoice_check import ABOVE_BUDGET, ALREADY_PAID, PaymentRefused
from pylon.customer.ledger import Ledger, SpendLimits
from pylon.group_commit import GroupCommitWriter, Savepoint
from pylon.storage import WriteTransaction

pytestmark = pytest.mark.timeout(60)


def _intent(i: int, *, job: str | None = None, limits: SpendLimits | None = None) -> dict:
    return dict(job_id=job or f"job{i:04d}", provider="p" * 64, payment_hash=f"{i:064x}", amount_msat=1_000,
                bolt11=f"lnbcrt{i}", session_id="s", limits=limits)


async def _queue_behind_a_held_write(ledger: Ledger) -> threading.Event:
    """Occupy the ledger's writer thread until the returned event is set, so the writes queued
    meanwhile form one batch."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    task = asyncio.ensure_future(ledger._on_writer(hold))
    await asyncio.to_thread(started.wait, 10)
    release.task = task  # type: ignore[attr-defined]
    return release


async def test_each_write_of_a_batch_has_its_own_outcome_after_the_commit(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger, other = Ledger(path), Ledger(path)  # `other`: another connection, as another process
    try:
        release = await _queue_behind_a_held_write(ledger)
        writes = [asyncio.ensure_future(ledger.record_intent_async(**_intent(i))) for i in range(20)]
        writes.append(asyncio.ensure_future(ledger.record_intent_async(**_intent(99, job="job0003"))))  # same job
        writes.append(asyncio.ensure_future(ledger.record_intent_async(**_intent(5, job="another"))))  # same hash
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in writes)  # queued behind the held write
        release.set()
        for w in asyncio.as_completed(writes):
            try:
                receipt = await w
            except PaymentRefused as exc:
                assert exc.reason == ALREADY_PAID
                continue
            assert other.get(receipt.payment_hash) is not None  # committed before its caller resumed
        results = [w.exception() or w.result() for w in writes]
        assert [type(r).__name__ for r in results[:20]] == ["Receipt"] * 20
        assert all(isinstance(r, PaymentRefused) for r in results[20:])
        assert len(other.receipts()) == 20 and all(r.status == "pending" for r in other.receipts())
        paid = await asyncio.gather(*(ledger.mark_paid_async(f"{i:064x}", preimage="00" * 32) for i in range(20)))
        assert all(r.status == "paid" for r in paid) and other.paid_msat() == 20_000
    finally:
        ledger.close()
        other.close()


async def test_a_daily_budget_holds_within_one_batch(tmp_path):
    """Five intents of 1,000 msat queued together against a 3,000 msat day: three pass."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        release = await _queue_behind_a_held_write(ledger)
        limits = SpendLimits(daily_msat=3_000)
        writes = [asyncio.ensure_future(ledger.record_intent_async(**_intent(i, limits=limits))) for i in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        assert [isinstance(o, PaymentRefused) and o.reason == ABOVE_BUDGET for o in outcomes] == [False] * 3 + [True] * 2
        assert ledger.spent_today_msat() == 3_000 and len(ledger.receipts()) == 3
    finally:
        ledger.close()


async def test_a_batch_sqlite_aborts_is_rerun_write_by_write(tmp_path):
    """A write that ends the batch's transaction under it (as SQLite does on a disk-full or I/O
    error): nothing of the batch is committed by it; every write runs again alone, in order."""
    db = sqlite3.connect(str(tmp_path / "t.sqlite"), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    lock = threading.RLock()
    writer = GroupCommitWriter(db, lock)
    runs: list[str] = []

    def put(k: str, abort: bool = False):
        def fn() -> str:
            runs.append(k)
            if writer.in_batch():
                db.execute("SAVEPOINT pylon_write")
                db.execute("INSERT INTO t VALUES (?)", (k,))
                if abort:
                    db.execute("ROLLBACK")  # the whole transaction is gone
                    raise sqlite3.OperationalError("disk I/O error")
                db.execute("RELEASE pylon_write")
            else:
                db.execute("INSERT INTO t VALUES (?)", (k,))
            return k
        return fn

    try:
        release, started = threading.Event(), threading.Event()
        held = asyncio.ensure_future(writer.run(lambda: (started.set(), release.wait(10))))
        await asyncio.to_thread(started.wait, 10)
        writes = [asyncio.ensure_future(writer.run(put(k, abort=(k == "b")))) for k in ("a", "b", "c")]
        await asyncio.sleep(0.05)
        release.set()
        await held
        assert await asyncio.gather(*writes) == ["a", "b", "c"]
        assert runs == ["a", "b", "a", "b", "c"]  # the batch stopped at b, then each ran alone
        assert sorted(r[0] for r in db.execute("SELECT k FROM t")) == ["a", "b", "c"]
    finally:
        writer.close()
        db.close()


def test_writes_queued_when_the_program_ends_are_written(tmp_path):
    """A program that ends with writes still queued (its Ledger never closed, its tasks
    cancelled by asyncio.run) exits after they are committed, as with the thread pool before."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "ledger.sqlite"
    code = (
        "import asyncio\n"
        "from pylon.customer.ledger import Ledger\n"
        f"ledger = Ledger({str(path)!r})\n"
        "import time\n"
        "async def main():\n"
        "    asyncio.ensure_future(ledger._on_writer(time.sleep, 0.5))  # the writes below queue behind it\n"
        "    for i in range(40):\n"
        "        asyncio.ensure_future(ledger.record_intent_async(job_id=f'j{i}', provider='p',"
        " payment_hash=f'{i:064x}', amount_msat=1, bolt11='x'))\n"
        "    await asyncio.sleep(0)\n"
        "asyncio.run(main())\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with Ledger(path) as ledger:
        assert len(ledger.receipts()) == 40


async def test_writes_that_need_no_fsync_commit_at_normal_and_full_is_restored(tmp_path):
    """A batch of only `synced=False` writes commits at synchronous=NORMAL (set before BEGIN:
    SQLite refuses it inside a transaction) and FULL is back before the lock is released; one
    synced write in the batch, or a synced write alone, commits at FULL."""
    db = sqlite3.connect(tmp_path / "w.sqlite", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t(x INTEGER)")
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    lock = threading.Lock()
    writer = GroupCommitWriter(db, lock, name="test-writer")

    def insert(x: int):
        def write() -> int:
            ctx = Savepoint(db) if writer.in_batch() else WriteTransaction(db, lock)
            with ctx:
                db.execute("INSERT INTO t VALUES (?)", (x,))
            return x
        return write

    def level_at_each_commit() -> list[str]:
        level, out = "FULL", []
        for s in statements:
            if s.startswith("PRAGMA synchronous="):
                level = s.split("=")[1]
            elif s == "COMMIT":
                out.append(level)
        return out

    try:
        assert await writer.run(insert(1), synced=False) == 1
        assert level_at_each_commit() == ["NORMAL"]
        statements.clear()
        assert await writer.run(insert(2)) == 2
        assert level_at_each_commit() == ["FULL"] and not any("synchronous" in s for s in statements)
        statements.clear()
        held, started = threading.Event(), threading.Event()
        hold = asyncio.ensure_future(writer.run(lambda: (started.set(), held.wait(10))))
        await asyncio.to_thread(started.wait, 10)
        mixed = [writer.submit(insert(3), synced=False), writer.submit(insert(4))]
        held.set()
        await hold
        assert await asyncio.gather(*mixed) == [3, 4]
        assert level_at_each_commit()[-1] == "FULL"  # the mixed batch
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 3, 4]
    finally:
        writer.close()
        db.close()


async def test_mark_paid_commits_without_an_fsync_and_the_intent_with_one(tmp_path):
    """The ledger's own use: the intent (before paying) is synced, marking it paid is not."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)
    try:
        await ledger.record_intent_async(**_intent(1))
        assert "PRAGMA synchronous=NORMAL" not in statements
        paid = await ledger.mark_paid_async(f"{1:064x}", preimage="ab" * 32)
        assert paid.status == "paid"
        assert statements.index("PRAGMA synchronous=NORMAL") < statements.index("COMMIT", statements.index(
            "PRAGMA synchronous=NORMAL")) < statements.index("PRAGMA synchronous=FULL")
    finally:
        ledger.close()


async def test_stop_writer_commits_the_queue_then_a_later_write_starts_a_new_thread(tmp_path):
    """SwarmHub.close retires the budget ledger's writer: what was queued is committed first,
    the thread ends, and the ledger keeps working on a new writer."""
    path = tmp_path / "ledger.sqlite"
    ledger, other = Ledger(path), Ledger(path)
    try:
        release = await _queue_behind_a_held_write(ledger)
        writes = [asyncio.ensure_future(ledger.record_intent_async(**_intent(i))) for i in range(3)]
        await asyncio.sleep(0.05)
        old = ledger._writer
        assert old is not None
        stopping = asyncio.ensure_future(asyncio.to_thread(ledger.stop_writer))
        await asyncio.sleep(0.05)
        assert not stopping.done()  # it waits for the queue
        release.set()
        await stopping
        assert [w.result().status for w in writes] == ["pending"] * 3
        assert len(other.receipts()) == 3  # committed before the thread ended
        assert not old._thread.is_alive() and ledger._writer is None
        assert (await ledger.mark_paid_async(f"{0:064x}", preimage="00" * 32)).status == "paid"
        assert ledger._writer is not None and ledger._writer is not old and ledger._writer._thread.is_alive()
    finally:
        ledger.close()
        other.close()


async def test_a_write_handed_to_a_retired_writer_goes_to_the_new_one(tmp_path):
    """The race stop_writer leaves: a caller found the old writer just before it was retired.
    Its write is refused there before anything ran (WriterClosed) and queued on a new writer."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        old = ledger._writer_thread()
        ledger.stop_writer()
        found = [old]
        real = ledger._writer_thread
        ledger._writer_thread = lambda: found.pop() if found else real()  # type: ignore[method-assign]
        receipt = await ledger.record_intent_async(**_intent(1))
        assert receipt.status == "pending" and not found
        assert ledger.get(receipt.payment_hash) is not None
    finally:
        ledger.close()


async def test_a_closed_ledger_refuses_writes_without_starting_a_writer(tmp_path):
    from pylon.customer.ledger import LedgerError

    ledger = Ledger(tmp_path / "ledger.sqlite")
    await ledger.record_intent_async(**_intent(1))
    ledger.close()
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(LedgerError, match="closed"):
        await ledger.record_intent_async(**_intent(2))
    ledger.mark_result_soon("job0001", "e" * 64)  # bookkeeping after close: dropped, as after a crash
    assert ledger._writer is None and {t.ident for t in threading.enumerate()} <= before
