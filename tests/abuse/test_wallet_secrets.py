"""Wallet secrets stay out of `ps`: `--wallet-file PATH` reads the URI from a file, and a
secret URI passed as `--wallet` works but says, in one line, that other users can see it."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_wallet_file_gives_the_uri(dev_ledger, tmp_path):
    secret_file = tmp_path / "wallet.uri"
    secret_file.write_text(dev_ledger.uri("alice") + "\n")
    os.chmod(secret_file, 0o600)
    r = runner.invoke(app, ["wallet", "fund", "7000", "--wallet-file", str(secret_file), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["balance_msat"] == 7000
    assert "warning" not in r.stderr


def test_secret_uri_on_the_command_line_warns_once_without_echoing_it():
    r = runner.invoke(app, ["wallet", "balance", "--wallet", "lnbits://SECRETKEY@127.0.0.1:9"])
    assert r.stderr.count("warning: --wallet puts the wallet secret") == 1
    assert "SECRETKEY" not in r.output and "Traceback" not in r.output


def test_wallet_file_problems_are_one_line(tmp_path, dev_ledger):
    r = runner.invoke(app, ["wallet", "balance", "--wallet-file", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "cannot read the wallet file" in r.stderr and "Traceback" not in r.output
    empty = tmp_path / "empty"
    empty.write_text("\n")
    r = runner.invoke(app, ["wallet", "balance", "--wallet-file", str(empty)])
    assert r.exit_code != 0 and "is empty" in r.stderr
    r = runner.invoke(app, ["wallet", "balance", "--wallet-file", str(empty), "--wallet", dev_ledger.uri("a")])
    assert r.exit_code != 0 and "not both" in r.stderr


def test_world_readable_wallet_file_is_flagged(tmp_path):
    loose = tmp_path / "wallet.uri"
    loose.write_text("lnbits://SECRETKEY@127.0.0.1:9\n")
    os.chmod(loose, 0o644)
    r = runner.invoke(app, ["wallet", "balance", "--wallet-file", str(loose)])
    assert "readable by other users" in r.stderr and "SECRETKEY" not in r.output
