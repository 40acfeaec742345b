"""The README's "Try it by hand" block, run as written against the demo stack: the embedded
relay, the CPU vLLM (tiny model, context 512) and `pylon serve --free`.

The two server lines that bind fixed ports (relay on 7777, vLLM on 8000) are stood in for by
the test's own relay and vLLM on free ports, and PYLON_RELAYS / PYLON_BACKEND point the
commands at them (the config layer every command reads); every other line, `pylon serve`
included, runs verbatim through bash."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme-examples -->\s*```sh\n(.*?)```", re.S)


def readme_lines() -> list[str]:
    match = BLOCK.search((ROOT / "README.md").read_text())
    assert match, "README.md lost its readme-examples block"
    return [line.split("  #")[0].strip() for line in match.group(1).splitlines() if line.strip()]


def test_block_is_found_and_starts_the_stack():
    lines = readme_lines()
    assert lines[0] == "pylon relay" and "pylon.devstack.vllm" in lines[1] and lines[2].startswith("pylon serve")
    assert any(line.startswith("pylon ask") for line in lines)


async def test_readme_examples_run_as_written(relay_url, vllm_server, tmp_path):
    lines = readme_lines()
    relay_line, vllm_line, serve_line, *commands = lines
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_") and k not in ("NO_COLOR", "COLUMNS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYLON_RELAYS=relay_url, PYLON_BACKEND=vllm_server.base_url)

    provider_env = dict(env, PYLON_HOME=str(tmp_path / "provider"))
    serve = await asyncio.create_subprocess_exec(
        "bash", "-c", f"exec {serve_line}", cwd=ROOT, env=provider_env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        first = (await asyncio.wait_for(serve.stdout.readline(), 120)).decode()
        assert first.startswith("serving as npub1") and "tiny-llama" in first, first
        customer_env = dict(env, PYLON_HOME=str(tmp_path / "customer"))
        for command in commands:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", f"set -o pipefail; {command}", cwd=ROOT, env=customer_env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 240)
            assert proc.returncode == 0, f"{command!r} exited {proc.returncode}: {err.decode()}"
            assert out.strip(), f"{command!r} printed nothing"
            if "--json" in command:
                data = json.loads(out)
                assert data["model"] == vllm_server.model and data["usage"]["completion_tokens"] >= 1
                assert data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] <= 512
            if command == "pylon providers":
                assert "tiny-llama" in out.decode()
            if command == "pylon history":
                assert out.decode().count("tiny-llama") == sum(c.count("pylon ask") for c in commands)
    finally:
        serve.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.wait(), 30)
    assert serve.returncode == 0
