"""`pylon keys import` (issue 18): an existing nsec becomes the identity, read from stdin (never argv),
mode 0600; a bad key, an npub or an existing identity is one error line. Real processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from pylon.nostr.keys import Keys

PYLON = str(Path(sys.executable).parent / "pylon")


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([PYLON, "keys", *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_import_an_nsec(pylon_home):
    keys = Keys.generate()
    out = _run("import", "--json", stdin=keys.nsec + "\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["npub"] == keys.npub
    ident = pylon_home / "identity.key"
    assert Keys.load(ident).public_key == keys.public_key
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    again = _run("import", stdin=Keys.generate().nsec)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert Keys.load(ident).public_key == keys.public_key  # untouched without --force
    forced = _run("import", "--force", stdin=keys.secret_hex)  # 64-hex secrets too
    assert forced.returncode == 0 and forced.stdout.strip() == keys.npub


def test_import_refuses_bad_input(pylon_home):
    for text, words in (("nsec1qqqq", "not a Nostr secret key"), (Keys.generate().npub, "public key"), ("", "no secret")):
        out = _run("import", stdin=text)
        assert out.returncode != 0 and words in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (pylon_home / "identity.key").exists()
