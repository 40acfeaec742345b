"""Files 0600 and PYLON_HOME 0700, whatever the umask and whatever an older version left."""

from __future__ import annotations

import os
import stat

import pytest

from pylon.customer.ledger import Ledger
from pylon.provider.jobstore import JobStore
from wallet.dev import DevLedger


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _check_sqlite_files(path) -> None:
    siblings = [str(path) + s for s in ("-wal", "-shm") if os.path.exists(str(path) + s)]
    assert siblings, "WAL databases should have their -wal/-shm while open"
    for name in (str(path), *siblings):
        assert _mode(name) == 0o600, (name, oct(_mode(name)))


def test_databases_are_created_0600(tmp_path, loose_umask):
    store = JobStore(tmp_path / "provider.sqlite")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    dev = DevLedger(tmp_path / "dev.sqlite")
    try:
        _check_sqlite_files(tmp_path / "provider.sqlite")
        _check_sqlite_files(tmp_path / "ledger.sqlite")
        _check_sqlite_files(tmp_path / "dev.sqlite")
    finally:
        store.close()
        ledger.close()
        dev.close()


def test_existing_loose_databases_are_tightened(tmp_path, loose_umask):
    for name in ("provider.sqlite", "ledger.sqlite", "dev.sqlite"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)
        (tmp_path / (name + "-wal")).touch()
        os.chmod(tmp_path / (name + "-wal"), 0o644)
    for name, opener in (("provider.sqlite", JobStore), ("ledger.sqlite", Ledger), ("dev.sqlite", DevLedger)):
        db = opener(tmp_path / name)
        try:  # SQLite removes the -wal on the last close: check it while the database is open
            _check_sqlite_files(tmp_path / name)
        finally:
            db.close()
    for name in ("provider.sqlite", "ledger.sqlite", "dev.sqlite"):
        assert _mode(tmp_path / name) == 0o600
        if (tmp_path / (name + "-wal")).exists():
            assert _mode(tmp_path / (name + "-wal")) == 0o600


def test_pylon_home_is_0700_even_when_it_existed_0755(pylon_home, loose_umask):
    os.chmod(pylon_home, 0o755)
    from pylon import home as home_mod

    assert home_mod.pylon_home() == pylon_home
    assert _mode(pylon_home) == 0o700


def test_new_pylon_home_is_0700(tmp_path, monkeypatch, loose_umask):
    target = tmp_path / "fresh" / "home"
    monkeypatch.setenv("PYLON_HOME", str(target))
    from pylon import home as home_mod

    assert home_mod.pylon_home() == target
    assert _mode(target) == 0o700


def test_ask_history_and_scoreboard_are_0600_new_or_loose(tmp_path, loose_umask):
    """The client's own databases (prompts may be private) go through the same mode helper."""
    from pylon.customer.history import History
    from pylon.customer.scoreboard import Scoreboard

    (tmp_path / "old-history.sqlite").touch()
    os.chmod(tmp_path / "old-history.sqlite", 0o644)
    for name in ("history.sqlite", "old-history.sqlite"):
        History(tmp_path / name).close()
        assert _mode(tmp_path / name) == 0o600, name
    board = Scoreboard(tmp_path / "scores.sqlite")
    try:
        board.record("ab" * 32, "cd" * 32, "delivered")
        board.flush()  # creates and writes the file
        _check_sqlite_files(tmp_path / "scores.sqlite")
    finally:
        board.close()


def test_a_new_relay_database_is_0600(tmp_path, loose_umask):
    """PYLON_HOME/relay.sqlite is created 0600 like Pylon's other databases (its -wal/-shm take
    the mode SQLite copies from it). An existing relay database keeps its mode."""
    from nexus_relay.store import EventStore

    store = EventStore(tmp_path / "relay.sqlite")
    store.open()
    try:
        _check_sqlite_files(tmp_path / "relay.sqlite")
    finally:
        store.close()
