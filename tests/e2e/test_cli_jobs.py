"""`pylon serve`, `pylon ask`, `pylon providers` and `pylon demo` as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from pylon.nostr.keys import Keys

pytestmark = pytest.mark.timeout(300)
PYLON = str(Path(sys.executable).parent / "pylon")


def _env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_")}
    env["PYLON_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return env


async def _pylon(*args: str, home: Path, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(PYLON, *args, env=_env(home), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_serve_ask_providers_from_the_command_line(relay_url, openai_double, tmp_path):
    provider_home = tmp_path / "provider"
    provider_keys = Keys.generate()
    provider_home.mkdir()
    provider_keys.save(provider_home / "identity.key")
    serve = await asyncio.create_subprocess_exec(
        PYLON, "serve", "--relay", relay_url, "--backend", openai_double.base_url, "--concurrency", "4",
        "--max-tokens-cap", "64", env=_env(provider_home), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(serve.stdout.readline(), 60)).decode()
        assert line.startswith(f"serving as {provider_keys.npub}"), line
        home = tmp_path / "customer"

        code, out, err = await _pylon("ask", "hello cli", "--relay", relay_url, "--max-tokens", "20", home=home)
        assert code == 0, err
        assert out == "This is the OpenAI double answering the prompt: hello cli\n"  # only the answer when piped

        code, out, err = await _pylon("ask", "json please", "--relay", relay_url, "--json", "--system", "terse",
                                      "--provider", provider_keys.npub, home=home)
        assert code == 0, err
        data = json.loads(out)
        assert data["provider"] == provider_keys.public_key and data["encrypted"] is True
        assert data["text"].endswith("json please") and data["usage"]["prompt_tokens"] == 3
        assert openai_double.requests[-1]["messages"][0] == {"role": "system", "content": "terse"}

        code, out, err = await _pylon("ask", "streamed", "--relay", relay_url, "--stream", home=home)
        assert code == 0 and out.endswith("streamed\n"), (out, err)

        code, out, err = await _pylon("providers", "--relay", relay_url, "--json", home=home)
        assert code == 0, err
        found = {p["pubkey"]: p for p in json.loads(out)}
        assert found[provider_keys.public_key]["models"] == ["double-model"]
        assert found[provider_keys.public_key]["max_tokens"] == 64

        code, out, err = await _pylon("ask", "x", "--relay", relay_url, "--model", "nope", "--provider",
                                      provider_keys.npub, home=home)
        assert code == 4 and out == "" and "not served here" in err and len(err.strip().splitlines()) == 1
    finally:
        serve.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.wait(), 30)
    assert serve.returncode == 0
    log = (await serve.stderr.read()).decode()
    assert "done customer=" in log and "tokens=" in log  # one line per job state change


async def test_ask_with_no_provider_fails_in_one_line(relay_url, tmp_path):
    code, out, err = await _pylon("ask", "anyone?", "--relay", relay_url, "--timeout", "1", home=tmp_path / "c")
    assert code == 4 and out == ""
    assert "no provider answered" in err and "cancelled" in err and len(err.strip().splitlines()) == 1


async def test_ask_with_an_unreachable_relay_fails_in_one_line(tmp_path):
    code, out, err = await _pylon("ask", "x", "--relay", "ws://127.0.0.1:9", "--timeout", "2", home=tmp_path / "c")
    lines = err.strip().splitlines()
    assert code == 3 and out == "" and len(lines) == 2, err  # the error, and its hint
    assert lines[0].startswith("error:") and "relay" in lines[0] and lines[1].startswith("hint: is a relay running")


@pytest.mark.vllm
@pytest.mark.slow
async def test_demo_runs_a_whole_job(tmp_path):
    from pylon.devstack.vllm import missing_reason

    if missing_reason():
        pytest.skip(missing_reason())
    code, out, err = await _pylon("demo", "--json", home=tmp_path / "d", timeout=240)
    assert code == 0, err
    data = json.loads(out)
    assert data["random_weights"] is True and data["usage"]["completion_tokens"] > 0
    # a paid job: 2000 msat + 1000 msat per 1k of max_tokens (32) = 2032 msat, moved between the accounts
    assert data["paid_msat"] == 2032 and data["receipt"]["status"] == "paid" and data["receipt"]["preimage"]
    assert data["balance_change_msat"] == {"customer": -2032, "provider": 2032}
    code, out, err = await _pylon("demo", "Hi", "--max-tokens", "4", home=tmp_path / "d", timeout=240)
    assert code == 0, err
    assert "weights are random" in err and "--backend" in err and "stopped" in err  # status: stderr
    assert "stopped" not in out and "weights are random" not in out
    assert "paid: 2004 msat" in out and "receipt:" in out and "customer 100000 → 97996 msat" in out
