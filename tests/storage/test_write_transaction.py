"""pylon.storage.WriteTransaction's unsynced commits on real SQLite: the connection is back at
synchronous=FULL after every one, also when its COMMIT fails."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from pylon.storage import WriteTransaction

FULL, NORMAL = 2, 1


def _db(tmp_path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    # a deferred foreign key is checked at COMMIT: a violation makes the COMMIT itself fail and
    # leaves the transaction open, as an I/O error at commit can
    db.execute("CREATE TABLE child(pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    return db


def test_an_unsynced_commit_runs_at_normal_and_full_is_back(tmp_path):
    db, lock = _db(tmp_path), threading.Lock()
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    with WriteTransaction(db, lock, unsynced=True):
        assert db.execute("PRAGMA synchronous").fetchone()[0] == NORMAL
        db.execute("INSERT INTO parent VALUES (1)")
    assert seen.index("PRAGMA synchronous=NORMAL") < seen.index("COMMIT") < seen.index("PRAGMA synchronous=FULL")
    assert db.execute("PRAGMA synchronous").fetchone()[0] == FULL and not lock.locked()


def test_a_failed_commit_is_rolled_back_and_full_is_back(tmp_path):
    db, lock = _db(tmp_path), threading.Lock()
    with pytest.raises(sqlite3.IntegrityError):
        with WriteTransaction(db, lock, unsynced=True):
            db.execute("INSERT INTO child VALUES (42)")  # no parent 42: the COMMIT fails
    assert not db.in_transaction and not lock.locked()
    assert db.execute("PRAGMA synchronous").fetchone()[0] == FULL
    assert db.execute("SELECT COUNT(*) FROM child").fetchone()[0] == 0
    with WriteTransaction(db, lock):  # the connection is usable, and synced, for the next write
        db.execute("INSERT INTO parent VALUES (7)")
    assert db.execute("SELECT id FROM parent").fetchall() == [(7,)]
