"""pylon.storage.private_db_file: databases are 0600, and an existing database is never opened.

Why the second rule has a test of its own: SQLite's locks are POSIX advisory locks, dropped
for the whole process when any descriptor of the file is closed. The mode helper used to
open-and-close existing databases; with two wallets on one ledger in a process, that dropped
the first connection's locks, another process then deleted the WAL under it, and payers saw
"no route" for invoices that were in the ledger (tests/faults: the clock-skew scenario)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

from pylon.storage import private_db_file


def test_creates_missing_file_0600(tmp_path):
    path = tmp_path / "new.sqlite"
    private_db_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_tightens_existing_files_by_path_without_opening_them(tmp_path, monkeypatch):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(x)")
    os.chmod(path, 0o644)
    opened: list[str] = []  # descriptors that were really opened (an O_EXCL refusal opens nothing)
    real_open = os.open

    def recording_open(name, *args, **kwargs):
        fd = real_open(name, *args, **kwargs)
        opened.append(os.fspath(name))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    private_db_file(path)
    db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [name for name in opened if name.startswith(str(path))], opened


def test_second_ledger_in_a_process_keeps_the_first_ones_writes_visible(tmp_path):
    """Two dev wallets on one ledger in this process; another process opens, writes and exits
    (its close may checkpoint); an invoice made here afterwards is visible to a new process."""
    from wallet.dev import DevLedger

    path = tmp_path / "dev.sqlite"
    first = DevLedger(path)
    second = DevLedger(path)  # runs the mode helper on the existing file
    code = "from wallet.dev import fund; import sys; fund(sys.argv[1], 'alice', 1000)"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    invoice = first.make_invoice("bob", 500, "after", 600)
    check = ("from wallet.dev import DevLedger; import sys; led = DevLedger(sys.argv[1]);"
             "print(led.pay_invoice('alice', sys.argv[2], 1000).amount_msat)")
    out = subprocess.run([sys.executable, "-c", check, str(path), invoice.bolt11], capture_output=True, text=True,
                         timeout=60)
    first.close()
    second.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "500"
