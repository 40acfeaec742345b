"""Output as real processes: no wrapping off a terminal, NO_COLOR, --json, `serve`'s lines,
--version, help that renders flags as flags with effective defaults, config init/set, and dev
wallet URIs that never create folders."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat

import pytest

from pylon.nostr.keys import Keys
from tests.cli.stack import PYLON, cli_env, pylon, serving

pytestmark = pytest.mark.timeout(300)


async def test_piped_output_is_not_wrapped_and_json_parses(relay_url, openai_double, tmp_path):
    long_answer = " ".join(f"word{i}" for i in range(60))  # ~470 characters on one line
    openai_double.reply = lambda req: long_answer
    async with serving(relay_url, openai_double.base_url, tmp_path) as stack:
        code, out, err = await stack.ask("long please")
        assert code == 0, err
        assert out == long_answer + "\n" and err == ""  # the answer alone, one line; no progress off a terminal
        code, out, err = await stack.ask("long please", "--json")
        assert code == 0 and json.loads(out)["text"] == long_answer
        code, out, err = await stack.run("history", "--json")
        assert code == 0 and [e["status"] for e in json.loads(out)] == ["ok", "ok"]
        code, out, err = await stack.run("providers", "--json")
        assert code == 0 and stack.provider_keys.public_key in {p["pubkey"] for p in json.loads(out)}
        code, out, err = await stack.run("history")  # a table, written to a pipe: rows not folded
        assert code == 0 and all(len(line) > 60 for line in out.splitlines() if "double-model" in line)


async def test_no_color_is_respected(tmp_path):
    home = tmp_path / "home"
    code, _, colored = await pylon("ask", "x", "--temperature", "9", home=home,
                                   env=cli_env(home, FORCE_COLOR="1"))
    assert code == 2 and "\x1b[" in colored  # forced color reaches even a pipe...
    code, _, plain = await pylon("ask", "x", "--temperature", "9", home=home,
                                 env=cli_env(home, FORCE_COLOR="1", NO_COLOR="1"))
    assert code == 2 and "\x1b[" not in plain and "temperature must be" in plain  # ...unless NO_COLOR


async def test_serve_announces_itself_once_and_says_when_it_creates_an_identity(relay_url, openai_double, tmp_path):
    home = tmp_path / "provider"
    for first in (True, False):
        proc = await asyncio.create_subprocess_exec(
            PYLON, "serve", "--free", "--relay", relay_url, "--backend", openai_double.base_url,
            env=cli_env(home), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
        proc.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        npub = Keys.load(home / "identity.key").npub
        everything = line + rest.decode() + err.decode()
        assert line.startswith(f"serving as {npub}") and everything.count("serving") == 1, everything
        assert ("created a new identity " + npub in err.decode()) is first, err.decode()


async def test_version_help_and_completion(tmp_path):
    home = tmp_path / "home"
    from pylon import __version__

    code, out, _ = await pylon("--version", home=home)
    assert code == 0 and out == f"pylon {__version__}\n"
    code, out, _ = await pylon("--help", home=home)
    assert code == 0 and "--install-completion" in out and "history" in out and "template" in out
    env = cli_env(home, PYLON_RELAYS="ws://10.1.2.3:7000", COLUMNS="200")
    code, out, _ = await pylon("ask", "--help", home=home, env=env)
    assert code == 0 and "<bool>" not in out and "│" not in out  # flags are flags, no boxes
    stream_line = next(line for line in out.splitlines() if "--stream" in line)
    assert stream_line.split()[0] == "--stream" and stream_line.split()[1] == "Print"
    assert "[default: ws://10.1.2.3:7000]" in out  # the effective default, from the environment
    assert "[default: 120]" in out  # --timeout
    code, out, _ = await pylon("serve", "--help", home=home, env=env)
    assert code == 0 and "ws://10.1.2.3:7000" in out and "http://127.0.0.1:8000/v1" in out


def test_start_up_does_not_load_the_settings_models():
    """Every `pylon` run (even --version) imports all command modules: none may import
    pylon.ops.config (pydantic models) at module level; commands load it when they run."""
    import subprocess
    import sys

    code = ("import sys, cli.main; bad = sorted(m for m in ('pydantic', 'pylon.ops.config', 'pylon.ops.doctor')"
            " if m in sys.modules); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


async def test_config_init_and_set(tmp_path):
    home = tmp_path / "home"
    code, out, err = await pylon("config", "init", home=home)
    assert code == 0, err
    path = home / "config.toml"
    text = path.read_text()
    assert "# relays = [\"ws://127.0.0.1:7777\"]" in text and "# timeout_s = 120.0" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    code, out, err = await pylon("config", "init", home=home)
    assert code == 2 and "exists" in err  # never overwritten silently

    assert (await pylon("config", "set", "timeout_s", "30", home=home))[0] == 0
    assert (await pylon("config", "set", "history.save_text", "true", home=home))[0] == 0
    assert (await pylon("config", "set", "relays", "ws://a:1,wss://b.example", home=home))[0] == 0
    for bad, message in ((("timeout_s", "0"), "greater than 0"), (("free", "maybe"), "true or false"),
                         (("relays", "http://x"), "ws:// or wss://"), (("nope", "1"), "unknown setting")):
        code, out, err = await pylon("config", "set", *bad, home=home)
        assert code == 2 and message in err and "Traceback" not in err, err
    code, out, err = await pylon("config", "show", "--json", home=home)
    data = json.loads(out)
    assert data["settings"]["timeout_s"] == 30.0 and data["settings"]["history_save_text"] is True
    assert data["settings"]["relays"] == ["ws://a:1", "wss://b.example"] and data["sources"]["timeout_s"] == "file"
    assert "# Relay URLs every command uses" in path.read_text()  # the comments survive `set`


async def test_dev_wallet_uri_never_creates_folders(tmp_path):
    home = tmp_path / "home"
    missing = tmp_path / "no" / "such" / "dir"
    code, out, err = await pylon("wallet", "fund", "1000", "--wallet", f"dev://{missing}/l.sqlite?account=a",
                                 home=home)
    assert code == 2 and f"dev wallet folder {missing} does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()
    code, out, err = await pylon("wallet", "fund", "1000", "--wallet", f"dev://{tmp_path}/l.sqlite?account=a",
                                 home=home)
    assert code == 0 and "balance 1000 msat" in out, err
