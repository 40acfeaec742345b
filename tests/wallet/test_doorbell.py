"""wallet.doorbell: a payment committed by another process wakes a dev-wallet watcher at once
(not at its next tick); dead listeners are cleared; without a doorbell the tick still works."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import wallet.dev as dev
from wallet.base import InvoiceState
from wallet.dev import DevWallet, fund
from wallet.doorbell import Doorbell

REPO = Path(__file__).resolve().parents[2]
PAY = ("import sys; from wallet.dev import DevLedger; "
       "DevLedger(sys.argv[1]).pay_invoice('payer', sys.argv[2], int(sys.argv[3]))")


async def _pay_in_another_process(ledger: Path, bolt11: str, amount: int) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", PAY, str(ledger), bolt11, str(amount),
                                                cwd=str(REPO), stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()


def _own_listeners(bell: Doorbell) -> list[Path]:
    if not bell.folder.is_dir():
        return []
    return [p for p in bell.folder.iterdir() if p.name.startswith(f"{os.getpid()}-")]


async def test_a_payment_by_another_process_rings_the_watcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ticks of an hour: only the ring can wake the watcher before the wait's 20 s run out
    monkeypatch.setattr(dev, "WATCH_TICK_S", 3600.0)
    monkeypatch.setattr(dev, "WATCH_TICK_RUNG_S", 3600.0)
    monkeypatch.setattr(dev, "WATCH_LINGER_S", 0.1)
    ledger = tmp_path / "dev.sqlite"
    fund(ledger, "payer", 100_000)
    async with DevWallet(ledger, "payee") as payee:
        bell = Doorbell(str(ledger.resolve()))
        inv = await payee.make_invoice(2_500, "rung", 600)
        wait = asyncio.create_task(payee.wait_invoice(inv.payment_hash, timeout=20))
        for _ in range(200):  # the watcher binds its listener on its first turn
            if _own_listeners(bell):
                break
            await asyncio.sleep(0.01)
        assert len(_own_listeners(bell)) == 1
        await _pay_in_another_process(ledger, inv.bolt11, 2_500)
        assert await asyncio.wait_for(wait, 30) == InvoiceState.SETTLED
        for _ in range(500):  # the watcher stops after its linger and takes its socket away
            if not _own_listeners(bell):
                break
            await asyncio.sleep(0.01)
        assert _own_listeners(bell) == []


async def test_without_a_doorbell_the_tick_still_sees_the_payment(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Doorbell, "listen", lambda self, callback: None)  # e.g. no AF_UNIX, or a long path
    ledger = tmp_path / "dev.sqlite"
    fund(ledger, "payer", 100_000)
    async with DevWallet(ledger, "payee") as payee:
        inv = await payee.make_invoice(1_500, "ticked", 600)
        wait = asyncio.create_task(payee.wait_invoice(inv.payment_hash, timeout=30))
        await asyncio.sleep(0.05)
        await _pay_in_another_process(ledger, inv.bolt11, 1_500)
        assert await asyncio.wait_for(wait, 40) == InvoiceState.SETTLED


def test_ring_clears_dead_listeners_and_ignores_strangers(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path / "some-ledger.sqlite"))
    bell.folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    dead = bell.folder / "999999-0.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()  # its process is gone; the file stays
    stranger = bell.folder / "notes.txt"
    stranger.write_text("not a socket")
    alive = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    alive_path = bell.folder / "999998-0.sock"
    alive.bind(str(alive_path))
    try:
        bell.ring()
        assert not dead.exists()
        assert stranger.exists()
        assert alive.recv(8) == b"\x01"
    finally:
        alive.close()
        alive_path.unlink()
        stranger.unlink()
        bell.close()


def test_the_folder_is_beside_the_ledger_or_in_tmp_when_that_is_too_long(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    short = Path("/tmp/l/ledger.sqlite")
    assert Doorbell(str(short)).folder == Path("/tmp/l/.ledger.sqlite.doorbell")  # shared with the ledger's volume
    deep = tmp_path / ("d" * 80) / "ledger.sqlite"
    assert Doorbell(str(deep)).folder.parent == Path(tempfile.gettempdir()) / f"pylon-dev-doorbell-{os.getuid()}"
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / ("x" * 120)))

    async def main() -> None:  # no path short enough anywhere: no doorbell (the tick stays)
        assert Doorbell(str(deep)).listen(lambda: None) is None

    asyncio.run(main())


async def test_between_waits_the_watcher_keeps_its_connection_and_listener(tmp_path: Path) -> None:
    """A provider waits on one invoice per job: the watcher lingers (WATCH_LINGER_S) instead of
    reopening its SQLite connection and rebinding its socket for every job (~1 ms a job)."""
    ledger = tmp_path / "dev.sqlite"
    async with DevWallet(ledger, "payee") as payee:
        first = await payee.make_invoice(1_000, "job 1", 600)
        assert await payee.wait_invoice(first.payment_hash, timeout=0.05) == InvoiceState.PENDING
        watcher = payee._watcher
        db, listener, task = watcher._db, watcher._listener, watcher._task
        assert db is not None and task is not None and not task.done()
        second = await payee.make_invoice(1_000, "job 2", 600)
        assert await payee.wait_invoice(second.payment_hash, timeout=0.05) == InvoiceState.PENDING
        assert watcher._db is db and watcher._listener is listener and watcher._task is task


async def test_the_last_listener_takes_its_folder_along(tmp_path: Path) -> None:
    """Folders are not left behind (the temp fallback gets one per ledger path: test runs made
    hundreds); a folder another listener still uses stays, and a listener whose folder was just
    removed by another process's last listener makes it again."""
    bell = Doorbell(str(tmp_path / "ledger.sqlite"))
    first, second = bell.listen(lambda: None), bell.listen(lambda: None)
    assert first is not None and second is not None
    first.close()
    assert bell.folder.is_dir()  # the second is still there
    second.close()
    assert not bell.folder.exists()
    third = bell.listen(lambda: None)  # the folder comes back for a new listener
    assert third is not None and bell.folder.is_dir()
    third.close()
    bell.close()
