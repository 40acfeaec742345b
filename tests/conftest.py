"""Shared fixtures. Every test gets its own PYLON_HOME in a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def pylon_home(tmp_path, monkeypatch):
    """Point PYLON_HOME at a fresh temporary folder so no test touches the user's state."""
    home = tmp_path / "pylon-home"
    home.mkdir()
    monkeypatch.setenv("PYLON_HOME", str(home))
    for name in ("PYLON_WALLET", "PYLON_RELAYS", "PYLON_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return home
