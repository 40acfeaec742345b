"""Relay metrics reflect real traffic: publish events over a real websocket, scrape, compare.

Marked embedded_relay: they read our relay's own counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from pylon.ops.health import relay_monitor
from pylon.nostr import Event, Keys

pytestmark = pytest.mark.embedded_relay


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def publish(ws, event: Event) -> list:
    """Send EVENT and return its OK (skipping what live subscriptions deliver meanwhile)."""
    await ws.send(json.dumps(["EVENT", event.to_dict()]))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply[0] == "OK" and reply[1] == event.id:
            return reply


async def test_relay_metrics_move_with_traffic(tmp_path):
    from nexus_relay import running_relay

    keys = Keys.generate()
    async with running_relay(tmp_path / "r.sqlite") as relay:
        async with relay_monitor(relay) as mon, httpx.AsyncClient(timeout=5) as http:
            before = samples((await http.get(mon.url + "/metrics")).text)
            assert before[("nexus_relay_connections", ())] == 0
            async with websockets.connect(relay.url) as ws:
                await ws.send(json.dumps(["REQ", "s1", {"kinds": [1]}]))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))[0] == "EOSE"
                for i in range(3):
                    ok = await publish(ws, Event.build(keys, 1, f"note {i}"))
                    assert ok[2] is True
                bad = Event.build(keys, 1, "tampered")
                bad.sig = "00" * 64
                reply = await publish(ws, bad)
                assert reply[0] == "OK" and reply[2] is False
                during = samples((await http.get(mon.url + "/metrics")).text)
            health = await http.get(mon.url + "/health")
            assert health.status_code == 200 and health.json()["checks"]["relay"]["ok"]
    assert during[("nexus_relay_connections", ())] == 1
    assert during[("nexus_relay_subscriptions", ())] == 1
    assert during[("nexus_relay_events_stored_total", ())] == 3
    assert during[("nexus_relay_messages_total", (("type", "EVENT"),))] == 4
    assert during[("nexus_relay_messages_total", (("type", "REQ"),))] == 1
    assert during[("nexus_relay_rejections_total", (("reason", "invalid"),))] == 1


def test_pylon_relay_cli_serves_metrics_and_json_logs(tmp_path, unused_tcp_port):
    """`pylon relay --metrics-port P --log-format json`: real process, real signals."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "relay", "--port", "0", "--db", str(tmp_path / "r.sqlite"),
         "--metrics-port", str(unused_tcp_port), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        url = proc.stdout.readline().strip()  # blocks until the relay prints its URL
        assert url.startswith("ws://127.0.0.1:"), url
        metrics = f"http://127.0.0.1:{unused_tcp_port}"

        async def traffic() -> tuple[str, httpx.Response]:
            async with websockets.connect(url) as ws:
                reply = await publish(ws, Event.build(Keys.generate(), 1, "hello metrics"))
                assert reply[0] == "OK" and reply[2] is True
            async with httpx.AsyncClient(timeout=5) as http:
                return (await http.get(metrics + "/metrics")).text, await http.get(metrics + "/health")

        text, health = asyncio.run(traffic())
        assert samples(text)[("nexus_relay_events_stored_total", ())] == 1
        assert health.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert any("metrics and health on" in line["msg"] for line in lines)
