"""Cross-process wake-ups for one dev ledger file: a process that commits a payment rings,
every process waiting on that ledger wakes at once instead of at its next poll tick.

Why: the dev wallet's watchers (wallet.dev `_SettleWatcher`) learn of payments made by other
processes by reading `PRAGMA data_version` every few milliseconds. A hold invoice sold over NWC
crosses processes twice (the payer's service locks the payment, the payee's service sees it;
the payee's service settles, the payer's service sees it), so those ticks sat in every paid
job's path. A ring is a hint, never data: the woken watcher still reads the ledger, and the
tick stays as the fallback for a lost ring.

How: each waiting process binds a Unix datagram socket in a folder of the ledger's
(`.<ledger file name>.doorbell/` beside it, so processes in containers that share the ledger's
volume share it too; `<tmp>/pylon-dev-doorbell-<uid>/<hash of the ledger path>/` where that
path would be too long for a socket), mode 0700, so only this user can ring. Ringing sends one byte to every socket in that folder without blocking; a socket whose
process died refuses the byte and is removed, and the last listener to close removes the
folder. Where Unix sockets are missing (Windows) or the
path would be too long, `Doorbell.listen` returns None and the watchers keep their tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 104-108 bytes with its NUL; keep a margin
_SOCK_NAME_MAX = 24  # "/<pid>-<n>.sock"
_ids = itertools.count()


def _folder(ledger_key: str) -> Path:
    """The folder of `ledger_key`'s (a resolved ledger path) listeners, the same in every process:
    beside the ledger (so containers sharing the ledger's volume share it too), or in the temp
    folder where that path would be too long for a socket."""
    ledger = Path(ledger_key)
    beside = ledger.parent / f".{ledger.name}.doorbell"
    if len(os.fsencode(beside)) + _SOCK_NAME_MAX <= _SUN_PATH_MAX:
        return beside
    uid = os.getuid() if hasattr(os, "getuid") else 0
    digest = hashlib.sha256(ledger_key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"pylon-dev-doorbell-{uid}" / digest


class Listener:
    """One bound socket; `callback` runs on the event loop when a ring arrives."""

    def __init__(self, sock: socket.socket, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._sock, self.path, self._loop = sock, path, loop

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):  # the last listener takes the folder along (not when others are in it)
            self.path.parent.rmdir()


class Doorbell:
    """The doorbell of one ledger file (module doc)."""

    def __init__(self, ledger_key: str) -> None:
        self.folder = _folder(ledger_key)
        self._sender: socket.socket | None = None
        if hasattr(socket, "AF_UNIX"):
            with contextlib.suppress(OSError):
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)

    def listen(self, callback: Callable[[], None]) -> Listener | None:
        """Bind a listener on the running loop; None where this platform or path cannot."""
        if not hasattr(socket, "AF_UNIX"):
            return None
        path = self.folder / f"{os.getpid()}-{next(_ids)}.sock"
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            return None
        loop = asyncio.get_running_loop()
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as exc:
            log.debug("dev wallet doorbell off: %s", exc)
            return None
        try:
            sock.setblocking(False)
            self._bind(sock, path)
        except OSError as exc:
            sock.close()
            log.debug("dev wallet doorbell off: %s", exc)
            return None

        def on_ring() -> None:
            with contextlib.suppress(OSError):
                while sock.recv(64):  # drain: one wake-up for however many rings queued
                    pass
            callback()

        loop.add_reader(sock.fileno(), on_ring)
        return Listener(sock, path, loop)

    def _bind(self, sock: socket.socket, path: Path) -> None:
        """Bind `sock` at `path`, making the folder first; once more if the last listener of
        another process removed the folder in between (Listener.close)."""
        for last in (False, True):
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a socket left by an earlier process with the same pid
            try:
                sock.bind(os.fspath(path))
                return
            except FileNotFoundError:
                if last:
                    raise

    def ring(self) -> None:
        """Wake every listener of this ledger; never blocks, never raises."""
        if self._sender is None:
            return
        try:
            entries = list(os.scandir(self.folder))
        except OSError:  # nobody ever listened on this ledger
            return
        own = f"{os.getpid()}-"  # this process's listeners were woken in-process already
        for entry in entries:
            if entry.name.startswith(own) or not entry.name.endswith(".sock"):
                continue
            try:
                self._sender.sendto(b"\x01", entry.path)
            except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:  # a full queue (a wake-up is pending anyway) or not a socket
                pass

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
