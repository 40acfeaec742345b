"""Group commit: many small SQLite writes from async code, one fsync per batch.

Why: the receipts ledger (pylon.customer.ledger) writes two to three rows per paid job, each
its own `BEGIN IMMEDIATE ... COMMIT` with synchronous=FULL, i.e. one fsync (~1 ms on this
machine's disk) per write, one after another on the ledger's writer thread. At 16 paid asks
at once the writes queued behind each other's fsyncs for tens of milliseconds. Here the
writer thread takes every write queued meanwhile and runs them in one transaction, each in
its own SAVEPOINT, then commits once.

What each write still gets, exactly as before:
* its own outcome: a write that raises is rolled back to its savepoint (its changes undone,
  the others' kept) and its exception goes to its caller;
* durability before its caller goes on: no result is handed back before the COMMIT of the
  batch returned (synchronous=FULL: on disk), so a payment intent is on disk before the
  wallet is asked, as the ledger's exactly-once rule needs;
* its order: writes run in the order they were queued.
If the batch cannot commit, or SQLite aborted the transaction under a write (disk full, I/O
error), nothing of it is on disk; every write of the batch then runs again on its own, in
its own transaction, as it did before group commit, and its callers get those outcomes.

A write queued with `synced=False` is one its owner can rebuild after a power loss (the
receipts ledger's `mark_paid`: a receipt left pending is settled by asking the wallet). A
batch of only such writes commits at synchronous=NORMAL (WAL: on disk after a crash of the
process, not of the machine), so no fsync waits; one synced write in the batch syncs it all.

A write function takes no arguments and opens its transaction with the owner's `_tx()`-style
factory, which must return `savepoint(db)` while `in_batch()` is true on the writer thread
(Ledger._tx does): the same function works in a batch and alone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import weakref
from types import TracebackType
from typing import Any, Callable, NamedTuple, TypeVar

from pylon.storage import Lock, WriteTransaction

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 64  # writes per transaction: bounds how long the write lock is held at once

# Writers not closed by their owner finish their queued writes when the interpreter exits, as
# a ThreadPoolExecutor's threads do (the same hook, run before non-daemon threads are joined).
_open_writers: "weakref.WeakSet[GroupCommitWriter]" = weakref.WeakSet()


def _close_open_writers() -> None:
    for writer in list(_open_writers):
        writer.close()


threading._register_atexit(_close_open_writers)  # type: ignore[attr-defined]


class Savepoint:
    """`with Savepoint(db):` inside an open transaction: RELEASE on success, ROLLBACK TO on
    an exception (only this write's changes are undone; the exception propagates)."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("SAVEPOINT pylon_write")
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._db.execute("RELEASE pylon_write")
            return
        if self._db.in_transaction:  # SQLite may already have rolled the whole transaction back
            try:
                self._db.execute("ROLLBACK TO pylon_write")
                self._db.execute("RELEASE pylon_write")
            except sqlite3.Error:  # the batch notices (in_transaction) and reruns its writes alone
                pass


class _Write(NamedTuple):
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    fut: "asyncio.Future[Any]"
    synced: bool  # False: may commit without an fsync (submit)


class WriterClosed(RuntimeError):
    """The writer was closed before this write was queued: nothing of it ran."""


class _Aborted(Exception):
    """SQLite ended the batch's transaction under one of its writes."""


class GroupCommitWriter:
    """One writer thread for one connection; `await writer.run(fn)` queues a write."""

    def __init__(self, db: sqlite3.Connection, lock: Lock, *, name: str = "pylon-writer",
                 max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._lock = lock
        self._max_batch = max_batch
        self._local = threading.local()
        self._queue: collections.deque[_Write] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=name)
        self._thread.start()
        _open_writers.add(self)

    def in_batch(self) -> bool:
        """True on the writer thread while a batch's transaction is open (use savepoints)."""
        return getattr(self._local, "active", False)

    async def run(self, fn: Callable[[], T], *, synced: bool = True) -> T:
        """Run `fn` on the writer thread; its result once it is committed. Cancelling the
        awaiting task does not cancel a write already queued (as with a crash after it)."""
        return await self.submit(fn, synced=synced)

    def submit(self, fn: Callable[[], T], *, synced: bool = True) -> "asyncio.Future[T]":
        """Queue `fn` (from the event loop's thread); the future has its result once it is
        committed. For a write nobody needs to wait for: `close()` still commits it.

        `synced=False`: a write that can be rebuilt after a power loss (the module doc);
        a batch of only such writes commits without an fsync."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._closing:
                raise WriterClosed("the writer is closed")
            self._queue.append(_Write(fn, loop, fut, synced))
            self._cond.notify()
        return fut

    def close(self) -> None:
        """Finish every queued write (committed), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()
        _open_writers.discard(self)

    # ------------------------------------------------------------------ the thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            if len(batch) == 1 and batch[0].synced:
                self._alone(batch)
            else:  # several, or one that needs no fsync (its own transaction cannot skip it)
                self._grouped(batch)

    def _grouped(self, batch: list[_Write]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        unsynced = not any(write.synced for write in batch)
        try:
            with WriteTransaction(self._db, self._lock, unsynced=unsynced):
                self._local.active = True
                try:
                    for fn, _, _, _ in batch:
                        try:
                            outcomes.append((True, fn()))
                        except BaseException as exc:  # noqa: BLE001 - handed to its caller
                            outcomes.append((False, exc))
                        if not self._db.in_transaction:
                            raise _Aborted()
                finally:
                    self._local.active = False
        except (_Aborted, sqlite3.Error) as exc:
            log.warning("group commit of %d writes failed (%s); running them one by one", len(batch), exc)
            self._lock.acquire()  # pylon.storage.Lock: acquire/release only
            try:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
            finally:
                self._lock.release()
            self._alone(batch)
            return
        for (ok, value), (_, loop, fut, _) in zip(outcomes, batch):
            _hand_back(loop, fut, ok, value)

    def _alone(self, batch: list[_Write]) -> None:
        for fn, loop, fut, _ in batch:
            try:
                _hand_back(loop, fut, True, fn())
            except BaseException as exc:  # noqa: BLE001 - handed to its caller
                _hand_back(loop, fut, False, exc)


def _hand_back(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    def settle() -> None:
        if fut.done():  # the caller was cancelled; the write stands
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # its loop is closed: nobody is waiting any more
        pass
