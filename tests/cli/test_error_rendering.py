"""How a command ends on each kind of failure (cli.common.exit_for), whatever the command.

`pylon keys show` is the vehicle: its first step (`identity_path`) is replaced by one that
raises what each test needs, so the rendering is exercised through the real app and group.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli.keys_cmd
import cli.main
from pylon.errors import EXIT_BUG, EXIT_INTERRUPTED, PaymentRefused, RelayError, StorageError


def _run(monkeypatch, exc: BaseException, *args: str, home: Path):
    def raiser():
        raise exc

    monkeypatch.setattr(cli.keys_cmd, "identity_path", raiser)
    return CliRunner().invoke(cli.main.app, [*args, "keys", "show"], env={"PYLON_HOME": str(home)})


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_an_expected_error_is_one_red_line_and_its_exit_code(monkeypatch, tmp_path):
    r = _run(monkeypatch, RelayError("no relay connected within 5s"), home=tmp_path)
    assert r.exit_code == 3 and _lines(r.stderr) == ["error: no relay connected within 5s"]


def test_a_hint_is_a_second_line_and_markup_in_messages_is_shown_as_text(monkeypatch, tmp_path):
    r = _run(monkeypatch, StorageError("cannot open [/x] here", hint="use [bold]another[/] PYLON_HOME"), home=tmp_path)
    assert r.exit_code == 7
    assert _lines(r.stderr) == ["error: cannot open [/x] here", "hint: use [bold]another[/] PYLON_HOME"]


def test_a_refusal_keeps_its_hint_in_str_and_shows_it_once(monkeypatch, tmp_path):
    refusal = PaymentRefused("no_wallet", "provider asks 5 msat", hint="pass --wallet URI")
    assert str(refusal).endswith("; pass --wallet URI") and refusal.exit_code == 5
    r = _run(monkeypatch, refusal, home=tmp_path)
    assert r.exit_code == 5 and _lines(r.stderr)[1] == "hint: pass --wallet URI" and len(_lines(r.stderr)) == 2


def test_a_bug_is_one_line_naming_the_traceback_file(monkeypatch, tmp_path):
    r = _run(monkeypatch, KeyError("surprise"), home=tmp_path)
    lines = _lines(r.stderr)
    assert r.exit_code == EXIT_BUG and len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("bug: KeyError") and "this is a bug in Pylon" in lines[0] and "-v" in lines[0]
    crash = Path(lines[0].split("the traceback is in ")[1].split(" ")[0].rstrip(";"))
    assert crash.parent == tmp_path / "crash" and "KeyError: 'surprise'" in crash.read_text()
    assert stat.S_IMODE(crash.stat().st_mode) == 0o600


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_shows_the_traceback_too(monkeypatch, tmp_path, flag):
    r = _run(monkeypatch, KeyError("surprise"), flag, home=tmp_path)
    assert r.exit_code == EXIT_BUG and "Traceback (most recent call last)" in r.stderr
    assert _lines(r.stderr)[-1].startswith("bug: KeyError")


def test_a_bug_without_pylon_home_writes_to_the_temp_folder_and_creates_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    r = _run(monkeypatch, ValueError("x"), home=tmp_path / "absent")
    assert r.exit_code == EXIT_BUG and not (tmp_path / "absent").exists()
    assert list((tmp_path / "tmp").glob("pylon-crash-*.txt"))


def test_ctrl_c_is_one_line_and_130(monkeypatch, tmp_path):
    r = _run(monkeypatch, KeyboardInterrupt(), home=tmp_path)
    assert r.exit_code == EXIT_INTERRUPTED and _lines(r.stderr) == ["interrupted (Ctrl-C)"]


def test_a_reader_that_left_is_not_a_bug(monkeypatch, tmp_path):
    r = _run(monkeypatch, BrokenPipeError(32, "Broken pipe"), home=tmp_path)
    assert r.exit_code == 141 and r.stderr == ""


def test_a_table_whose_reader_left_exits_141_in_silence(tmp_path):
    """`pylon receipts | head -1` for real: rich's console, not our own write, meets the closed
    pipe (rich alone would end the process with 1)."""
    import os
    import subprocess
    import sys

    from pylon.customer.ledger import Ledger

    with Ledger(tmp_path / "ledger.sqlite") as ledger:  # enough rows to outgrow the pipe's buffer
        for i in range(3_000):
            ledger.record_intent(job_id=f"job{i}", provider="ab" * 32, payment_hash=f"{i:064x}", amount_msat=1_000,
                                 bolt11="lnbc1x", session_id="s")
    env = {**os.environ, "PYLON_HOME": str(tmp_path)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "pylon"), "receipts"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip()
    proc.stdout.close()  # the reader leaves, as `head -1` does
    assert proc.wait(60) == 141
    assert proc.stderr.read() == b""
