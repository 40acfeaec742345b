"""Where Pylon keeps its state: PYLON_HOME (default ~/.config/pylon).

It holds the identity (identity.key, mode 0600), config.toml and the SQLite databases.
Every test points PYLON_HOME at a temporary folder.

Modes: the folder is 0700 (an existing one with group/other bits, e.g. 0755 from an
older version or a umask, is tightened on first use) and every database is 0600 with its
-wal/-shm/-journal siblings (`private_file`): receipts, job state and wallet ledgers are
nobody else's business on a shared machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from pylon.errors import StorageError
from pylon.storage import private_db_file


def pylon_home() -> Path:
    """The state folder, created (mode 0700) on first use; StorageError when it cannot be."""
    home = Path(os.environ.get("PYLON_HOME") or Path.home() / ".config" / "pylon").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if home.stat().st_mode & 0o077:
            home.chmod(0o700)
    except OSError as exc:
        raise StorageError(f"cannot use {home} as Pylon's folder: {exc.strerror or exc}",
                           hint="set PYLON_HOME to a folder you can write") from exc
    return home


def private_file(path: Path) -> Path:
    """Make `path` a file only its owner can read (0600) before SQLite opens it.

    A missing file is created empty with mode 0600 (SQLite gives its -wal/-shm the mode of
    the database file); an existing one and its -wal/-shm/-journal are tightened if group
    or others have any bit, by path: an existing database is never opened here, because
    closing any descriptor of it drops this process's SQLite locks (pylon.storage)."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return Path(path)
    path = Path(path)
    private_db_file(path)  # never opens an existing database: see pylon.storage
    return path


def identity_path() -> Path:
    return pylon_home() / "identity.key"


def config_path() -> Path:
    return pylon_home() / "config.toml"


def db_path(name: str) -> Path:
    """A SQLite database under PYLON_HOME, e.g. db_path("provider") -> provider.sqlite."""
    return pylon_home() / f"{name}.sqlite"
