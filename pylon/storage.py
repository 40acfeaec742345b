"""SQLite helpers shared by every store that writes (a leaf: imports nothing of ours).

The receipts ledger (pylon.customer.ledger) and the dev wallet's ledger (wallet.dev) both
write in short `BEGIN IMMEDIATE` transactions under their own thread locks; this is that
transaction, written once. `wallet` may import it (docs/ARCHITECTURE.md, the arrows).
"""

from __future__ import annotations

import os
import sqlite3
from types import TracebackType
from typing import Protocol


SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")


def private_db_file(path: str | os.PathLike[str]) -> None:
    """Make a database file 0600 before SQLite opens it, without ever opening an existing one.

    Why never open: SQLite's locks are POSIX advisory locks, which belong to the process and
    are dropped when *any* descriptor of that file is closed in it. Opening and closing an
    existing database (to tighten its mode) while a connection of this process has it open
    silently drops that connection's locks; another process may then checkpoint and delete
    the WAL under it, and writes become invisible (seen as "no route" for an invoice that was
    in the dev ledger). So: a missing file is created with O_EXCL (no connection can have it
    open yet); an existing file and its -wal/-shm/-journal are tightened with chmod by path.
    SQLite gives a new -wal/-shm the mode of the database file."""
    name = os.fspath(path)
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # SQLite will report what is wrong with the path
    for candidate in (name, *(name + suffix for suffix in SQLITE_SIBLINGS)):
        try:
            if os.stat(candidate).st_mode & 0o077:
                os.chmod(candidate, 0o600)
        except OSError:
            pass


class Lock(Protocol):
    """threading.Lock or RLock."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


class WriteTransaction:
    """`with WriteTransaction(db, *locks) as db:` — take `locks` in order, BEGIN IMMEDIATE
    (the SQLite write lock from the start, so two writers never deadlock upgrading a read),
    COMMIT on success or ROLLBACK on any exception, then release the locks in reverse.

    `unsynced=True` (for a connection kept at synchronous=FULL, in WAL mode): this one
    transaction commits at synchronous=NORMAL, without an fsync: it survives a crash of the
    process, not of the machine. SQLite allows the level to change only between
    transactions, so it is set after the locks are taken and FULL is back before they are
    released. For writes that can be rebuilt after a power loss (pylon.customer.ledger).

    A class rather than a generator context manager: it sits on the payment hot path."""

    __slots__ = ("_db", "_locks", "_unsynced")

    def __init__(self, db: sqlite3.Connection, *locks: Lock, unsynced: bool = False) -> None:
        self._db = db
        self._locks = locks
        self._unsynced = unsynced

    def __enter__(self) -> sqlite3.Connection:
        taken: list[Lock] = []
        try:
            for lock in self._locks:
                lock.acquire()
                taken.append(lock)
            if self._unsynced:
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            if self._unsynced:
                self._resync()
            for lock in reversed(taken):
                lock.release()
            raise
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            if self._unsynced:
                self._resync()
            for lock in reversed(self._locks):
                lock.release()

    def _resync(self) -> None:
        """FULL again. A COMMIT that failed (a deferred constraint, an I/O error) can leave the
        transaction open, where SQLite refuses the change and the connection would stay at
        NORMAL for every later, synced write: it is rolled back first (the COMMIT's error
        still goes to the caller, who already treats the write as not done)."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:  # the connection itself is broken: its next statement says so
            pass
