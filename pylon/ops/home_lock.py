"""One `pylon serve` per PYLON_HOME: an advisory lock on PYLON_HOME/serve.lock (fcntl.flock).

Why: two providers on one home share one identity and one job store, so they overwrite each
other's NIP-89 announcement (same address) and race on the same jobs. The lock is taken before
anything is announced; the kernel drops it when the process dies, however it dies, so a crash
never leaves a stale lock behind. The file holds the holder's pid, which `pylon serve pause` /
`resume` / `reload` use to signal it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from pylon.errors import ConfigError, StorageError
from pylon.home import pylon_home

LOCK_NAME = "serve.lock"


class HomeLock:
    """Held while the object is open; `release()` (or process exit) lets it go."""

    def __init__(self, home: Path | None = None, name: str = LOCK_NAME) -> None:
        self.home = Path(home) if home is not None else pylon_home()
        self.path = self.home / name
        self._file: IO[str] | None = None

    def acquire(self) -> "HomeLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = file.read().strip() or "?"
            file.close()
            raise ConfigError(
                f"another pylon serve (pid {holder}) is already using PYLON_HOME={self.home}",
                hint="stop it first, or give each provider its own PYLON_HOME (one identity and job store "
                     "each); several models in one provider: [[models]] in config.toml") from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> "HomeLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_pid(home: Path | None = None, name: str = LOCK_NAME) -> int | None:
    """The pid of the `pylon serve` holding the lock on `home`, None when nobody holds it."""
    path = (Path(home) if home is not None else pylon_home()) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd) as file:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: read who holds it
            try:
                return int(file.read().strip())
            except ValueError:
                return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
