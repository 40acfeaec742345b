"""Restart durability and the `pylon relay` command: every acknowledged event survives a
clean restart and a SIGKILL; the command prints its URL first and stops on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nexus_relay import running_relay
from pylon.nostr import Keys

from tests.relay.helpers import RawClient, note

pytestmark = pytest.mark.embedded_relay

REPO = Path(__file__).resolve().parents[2]


async def test_acknowledged_events_survive_clean_restart(tmp_path):
    db = tmp_path / "relay.sqlite"
    keys = Keys.generate()
    acked: list[str] = []
    async with running_relay(db) as relay, RawClient(relay.url) as c:
        events = [note(keys, f"durable {i}") for i in range(200)]
        for ev in events:
            await c.send(["EVENT", ev.to_dict()])
        for _ in events:
            ok = await c.recv_type("OK")
            if ok[2]:
                acked.append(ok[1])
    assert len(acked) == 200
    async with running_relay(db) as relay, RawClient(relay.url) as c:
        got, _ = await c.req("all", {"authors": [keys.public_key], "limit": 500})
    assert {e["id"] for e in got} == set(acked)


def _start_cli(db: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "relay", "--port", "0", "--db", str(db), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()  # blocks until the relay prints its URL (or exits)
    if not url.startswith("ws://"):
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"pylon relay did not print its URL first: {url!r}")
    return proc, url


async def test_cli_prints_url_and_survives_sigkill(tmp_path):
    db = tmp_path / "cli-relay.sqlite"
    keys = Keys.generate()
    proc, url = _start_cli(db)
    acked: list[str] = []
    try:
        async with RawClient(url) as c:
            events = [note(keys, f"kill {i}") for i in range(300)]
            for ev in events:
                await c.send(["EVENT", ev.to_dict()])
            for _ in range(150):  # kill while more OKs are still coming
                ok = await c.recv_type("OK")
                assert ok[2] is True
                acked.append(ok[1])
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    proc2, url2 = _start_cli(db)
    try:
        async with RawClient(url2) as c:
            got, _ = await c.req("all", {"authors": [keys.public_key], "limit": 500})
        assert set(acked) <= {e["id"] for e in got}
    finally:
        proc2.send_signal(signal.SIGTERM)
        assert proc2.wait(15) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_cli_stops_cleanly_on_signal(tmp_path, sig):
    proc, url = _start_cli(tmp_path / "sig.sqlite", "--auth")
    try:
        async with RawClient(url) as c:
            assert (await c.recv())[0] == "AUTH"  # --auth turns NIP-42 on
    finally:
        proc.send_signal(sig)
        assert proc.wait(15) == 0
