"""Where Pylon keeps its state: PYLON_HOME (default ~/.config/pylon).

It holds the identity (identity.key, mode 0600), config.toml and the SQLite databases.
Every test points PYLON_HOME at a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from pylon.errors import StorageError


def pylon_home() -> Path:
    """The state folder, created (mode 0700) on first use; StorageError when it cannot be."""
    home = Path(os.environ.get("PYLON_HOME") or Path.home() / ".config" / "pylon").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot use {home} as Pylon's folder: {exc.strerror or exc}",
                           hint="set PYLON_HOME to a folder you can write") from exc
    return home


def identity_path() -> Path:
    return pylon_home() / "identity.key"


def config_path() -> Path:
    return pylon_home() / "config.toml"


def db_path(name: str) -> Path:
    """A SQLite database under PYLON_HOME, e.g. db_path("provider") -> provider.sqlite."""
    return pylon_home() / f"{name}.sqlite"
