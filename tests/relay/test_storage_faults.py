"""Relay storage faults: a database it cannot write is one line (exit 7), never a traceback; the
WAL is truncated after checkpoints and on a clean stop, so the next start opens a short file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from nexus_relay import running_relay
from nexus_relay.store import WAL_SIZE_LIMIT, EventStore
from pylon.errors import StorageError
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.embedded_relay]
PYLON = str(Path(sys.executable).parent / "pylon")


@pytest.fixture
def immutable_db(tmp_path):
    """A relay database the process cannot write, even as root (the immutable attribute)."""
    db = tmp_path / "ro.sqlite"
    store = EventStore(db)
    store.open()
    store.close()
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needed to make a file read-only for root)")
    try:
        yield db
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)


def test_read_only_database_is_one_line(immutable_db):
    with pytest.raises(StorageError, match="read-only"):
        EventStore(immutable_db).open()
    proc = subprocess.run([PYLON, "relay", "--port", "0", "--db", str(immutable_db)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 7, proc.stderr
    assert "read-only" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_a_directory_as_database_is_one_line(tmp_path):
    with pytest.raises(StorageError, match="relay database"):
        EventStore(tmp_path).open()


async def test_wal_is_truncated_on_stop_and_limited_after_checkpoints(tmp_path):
    db = tmp_path / "relay.sqlite"
    keys = Keys.generate()
    async with running_relay(db) as relay:
        assert relay.store._w.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
        async with RelayPool([relay.url], keys=keys) as pool:
            await asyncio.gather(*(pool.publish(Event.build(keys, 1, f"note {i}", [])) for i in range(200)))
        assert Path(f"{db}-wal").stat().st_size > 0
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    async with running_relay(db) as relay:  # everything is still there
        assert relay.store.stored_count() == 200
