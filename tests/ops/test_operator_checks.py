"""`pylon doctor` warns an operator about a dev wallet on a public relay, a wallet without a price,
and a config file with a secret that others can read (issue 18); real files, real `pylon doctor`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pylon.ops.config import load_settings
from pylon.ops.operator_checks import is_local_relay, operator_warnings

PYLON = str(Path(sys.executable).parent / "pylon")


def test_local_and_public_relays():
    assert is_local_relay("ws://127.0.0.1:7777") and is_local_relay("ws://localhost:7777")
    assert is_local_relay("ws://relay:7777") and is_local_relay("ws://192.168.1.5:7777")
    assert not is_local_relay("wss://relay.damus.io") and not is_local_relay("wss://8.8.8.8")


def test_warnings(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('relays = ["wss://relay.damus.io"]\nwallet = "dev:///tmp/x.sqlite?account=p"\n')
    config.chmod(0o644)
    settings = load_settings(path=config, environ={})
    steps = sorted(w.step for w in operator_warnings(settings, config))
    assert steps == ["file mode", "price", "wallet"]
    config.chmod(0o600)
    config.write_text('relays = ["ws://127.0.0.1:7777"]\nwallet = "dev:///tmp/x.sqlite?account=p"\nprice_msat = 5\n')
    assert operator_warnings(load_settings(path=config, environ={}), config) == []


def test_doctor_prints_them(pylon_home):
    config = pylon_home / "config.toml"
    # a local relay nobody listens on (nothing leaves this machine): the price and file-mode warnings
    config.write_text('relays = ["ws://127.0.0.1:9"]\nwallet = "dev:///nonexistent.sqlite?account=p"\n')
    config.chmod(0o640)
    out = subprocess.run([PYLON, "doctor", "--json", "--no-backend"], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr
    findings = json.loads(out.stdout)["findings"]
    warned = {f["step"] for f in findings if f["level"] == "warn" and f["check"] == "config"}
    assert {"price", "file mode"} <= warned and "wallet" not in warned
