"""SQLite helpers shared by every store that writes (a leaf: imports nothing of ours).

The receipts ledger (pylon.customer.ledger) and the dev wallet's ledger (wallet.dev) both
write in short `BEGIN IMMEDIATE` transactions under their own thread locks; this is that
transaction, written once. `wallet` may import it (docs/ARCHITECTURE.md, the arrows).
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Protocol


class Lock(Protocol):
    """threading.Lock or RLock."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


class WriteTransaction:
    """`with WriteTransaction(db, *locks) as db:` — take `locks` in order, BEGIN IMMEDIATE
    (the SQLite write lock from the start, so two writers never deadlock upgrading a read),
    COMMIT on success or ROLLBACK on any exception, then release the locks in reverse.

    A class rather than a generator context manager: it sits on the payment hot path."""

    __slots__ = ("_db", "_locks")

    def __init__(self, db: sqlite3.Connection, *locks: Lock) -> None:
        self._db = db
        self._locks = locks

    def __enter__(self) -> sqlite3.Connection:
        taken: list[Lock] = []
        try:
            for lock in self._locks:
                lock.acquire()
                taken.append(lock)
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            for lock in reversed(self._locks):
                lock.release()
