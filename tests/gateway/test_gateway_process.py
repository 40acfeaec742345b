"""`pylon gateway` as a real process: the base URL is its first line, it answers over a real
relay and provider, stops cleanly on SIGINT, and refuses unsafe or impossible binds in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from pylon.nostr.keys import Keys
from tests.e2e.helpers import serving

PYLON = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


async def _start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *PYLON, "gateway", *args, cwd=ROOT, env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_gateway_process_serves_and_stops_on_sigint(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", keys=Keys.generate(),
                       models=["double-model"], free=True):
        proc = await _start("--port", "0", "--relay", relay_url)
        try:
            first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
            assert first.startswith("http://127.0.0.1:") and first.endswith("/v1"), first
            async with httpx.AsyncClient(base_url=first, timeout=60) as http:
                resp = await http.post("/chat/completions", json={
                    "model": "double-model", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
                assert resp.status_code == 200, resp.text
                assert resp.json()["choices"][0]["message"]["content"]
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 20)
            assert proc.returncode == 0
            assert b"Traceback" not in await proc.stderr.read()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_non_loopback_bind_needs_an_api_key(relay_url):
    proc = await _start("--host", "0.0.0.0", "--port", "0", "--relay", relay_url)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and b"Traceback" not in err
    assert b"--api-key" in err and len(err.decode().strip().splitlines()) <= 3


async def test_port_in_use_is_one_line(relay_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await _start("--port", str(port), "--relay", relay_url)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and b"Traceback" not in err
    assert b"cannot listen" in err and len(err.decode().strip().splitlines()) <= 3
