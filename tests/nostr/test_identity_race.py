"""Many processes creating the identity of one fresh PYLON_HOME at once all end with the same
key (one winner, linked into place), and no process fails (issue 17: concurrent `pylon ask`)."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

from pylon.nostr.keys import Keys


def _create(path: str) -> str:
    return Keys.load_or_create(Path(path)).public_key


def test_concurrent_first_use_agrees_on_one_identity(tmp_path):
    folder = tmp_path / "fresh"
    folder.mkdir()
    path = folder / "identity.key"
    with mp.get_context("fork").Pool(8) as pool:
        keys = pool.map(_create, [str(path)] * 32)
    assert len(set(keys)) == 1 and Keys.load(path).public_key == keys[0]
    assert os.listdir(folder) == ["identity.key"]  # no temporary files left behind
    assert path.stat().st_mode & 0o777 == 0o600
