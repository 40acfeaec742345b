"""Where Pylon keeps its state: PYLON_HOME (default ~/.config/pylon).

It holds the identity (identity.key, mode 0600), config.toml and the SQLite databases.
Every test points PYLON_HOME at a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def pylon_home() -> Path:
    """The state folder, created (mode 0700) on first use."""
    home = Path(os.environ.get("PYLON_HOME") or Path.home() / ".config" / "pylon").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def identity_path() -> Path:
    return pylon_home() / "identity.key"


def config_path() -> Path:
    return pylon_home() / "config.toml"


def db_path(name: str) -> Path:
    """A SQLite database under PYLON_HOME, e.g. db_path("provider") -> provider.sqlite."""
    return pylon_home() / f"{name}.sqlite"
