"""`pylon config show|path`: precedence (defaults < file < env < flags) and secret masking."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from pylon.ops.config import Settings

WALLET_SECRET = "5e3f0a9c1d7b2e4f6a8c0e2d4b6f8a1c3e5d7b9f0a2c4e6d8b1f3a5c7e9d0b2f"
WALLET_URI = (f"nostr+walletconnect://b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4"
              f"?relay=wss%3A%2F%2Frelay.example.com&secret={WALLET_SECRET}")
API_KEY = "sk-pylon-test-TOPSECRET-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No PYLON_* setting from the developer's shell may leak into these tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv("PYLON_" + name.upper(), raising=False)


def show(*args: str) -> dict:
    result = CliRunner().invoke(app, ["config", "show", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def write_config(home, text: str) -> None:
    (home / "config.toml").write_text(text)


def test_precedence_default_file_env_flag(pylon_home, monkeypatch):
    data = show()
    assert data["settings"]["concurrency"] == 32 and data["sources"]["concurrency"] == "default"
    assert data["config_file_exists"] is False

    write_config(pylon_home, 'concurrency = 10\nprice_msat = 5\nrelays = ["ws://file:1"]\n')
    data = show()
    assert data["settings"]["concurrency"] == 10 and data["sources"]["concurrency"] == "file"
    assert data["settings"]["relays"] == ["ws://file:1"]
    assert data["config_file_exists"] is True

    monkeypatch.setenv("PYLON_CONCURRENCY", "20")
    monkeypatch.setenv("PYLON_RELAYS", "ws://env:1, ws://env:2")
    data = show()
    assert data["settings"]["concurrency"] == 20 and data["sources"]["concurrency"] == "env PYLON_CONCURRENCY"
    assert data["settings"]["relays"] == ["ws://env:1", "ws://env:2"]
    assert data["settings"]["price_msat"] == 5 and data["sources"]["price_msat"] == "file"

    data = show("--set", "concurrency=30", "--relay", "ws://flag:1")
    assert data["settings"]["concurrency"] == 30 and data["sources"]["concurrency"] == "flag"
    assert data["settings"]["relays"] == ["ws://flag:1"] and data["sources"]["relays"] == "flag"
    assert data["settings"]["price_msat"] == 5


def test_path_prints_the_config_file_under_pylon_home(pylon_home):
    result = CliRunner().invoke(app, ["config", "path"])
    assert result.exit_code == 0
    assert result.stdout.strip() == str(pylon_home / "config.toml")
    data = json.loads(CliRunner().invoke(app, ["config", "path", "--json"]).stdout)
    assert data == {"config_path": str(pylon_home / "config.toml"), "exists": False}


@pytest.mark.parametrize("where", ["file", "env", "flag"])
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_secrets_never_printed(pylon_home, monkeypatch, where, fmt):
    args: list[str] = []
    if where == "file":
        write_config(pylon_home, f'wallet = "{WALLET_URI}"\nbackend_api_key = "{API_KEY}"\n')
    elif where == "env":
        monkeypatch.setenv("PYLON_WALLET", WALLET_URI)
        monkeypatch.setenv("PYLON_BACKEND_API_KEY", API_KEY)
    else:
        args = ["--wallet", WALLET_URI, "--set", f"backend_api_key={API_KEY}"]
    if fmt == "json":
        args.append("--json")
    monkeypatch.setenv("COLUMNS", "400")  # a table wide enough that no value is folded
    result = CliRunner().invoke(app, ["config", "show", *args])
    assert result.exit_code == 0, result.output
    out = result.output
    assert WALLET_SECRET not in out and WALLET_SECRET[:12] not in out
    assert API_KEY not in out and "TOPSECRET" not in out
    assert "nostr+walletconnect://***" in out  # the scheme stays visible
    if fmt == "json":
        settings = json.loads(result.stdout)["settings"]
        assert settings["wallet"] == "nostr+walletconnect://***"
        assert settings["backend_api_key"] == "***"


def test_invalid_config_is_one_clear_line_without_secrets(pylon_home):
    write_config(pylon_home, f'wallet = "{WALLET_URI}"\nconcurrency = 0\n')
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2  # ConfigError's exit code
    assert "concurrency" in result.output
    assert WALLET_SECRET not in result.output
    assert "Traceback" not in result.output


def test_unknown_setting_and_bad_toml_are_refused(pylon_home):
    result = CliRunner().invoke(app, ["config", "show", "--set", "no_such_thing=1"])
    assert result.exit_code == 2 and "unknown setting" in result.output
    write_config(pylon_home, "concurrency = = 3\n")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2 and "not valid TOML" in result.output
