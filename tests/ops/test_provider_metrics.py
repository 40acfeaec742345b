"""Provider metrics and health reflect real jobs: run jobs through relay -> provider -> backend,
scrape /metrics and /health over HTTP, and see the counters move.

The backend is the OpenAI server double (scriptable failures); the relay is `relay_url`
(embedded, or PYLON_TEST_RELAY).
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylon.customer.client import ProviderError
from pylon.ops.health import serve_monitor
from pylon.ops.metrics import ProviderMetrics
from tests.e2e.helpers import customer, serving

pytestmark = pytest.mark.timeout(120)


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def jobs(s: dict, status: str) -> float:
    return s.get(("pylon_provider_jobs_total", (("status", status),)), 0.0)


async def scrape_once_done(http: httpx.AsyncClient, url: str, successes: int) -> dict:
    """Scrape /metrics until `successes` jobs count as done (at most 10 s). The relay hands the
    result to the customer before it acknowledges it to the provider, and the provider counts a
    job done on that acknowledgement, so the customer can hold the answer a moment before the
    counter moves."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        s = samples((await http.get(url)).text)
        if jobs(s, "success") >= successes or loop.time() > deadline:
            return s
        await asyncio.sleep(0.05)


async def test_counters_move_with_real_jobs(relay_url, openai_double, tmp_path):
    metrics = ProviderMetrics()
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", metrics=metrics) as provider:
        async with serve_monitor(provider) as mon, httpx.AsyncClient(timeout=10) as http:
            before = samples((await http.get(mon.url + "/metrics")).text)
            assert jobs(before, "success") == 0
            assert before[("pylon_provider_relay_connected", (("relay", relay_url),))] == 1
            health = await http.get(mon.url + "/health")
            assert health.status_code == 200, health.text
            assert set(health.json()["checks"]) == {"backend", "relays"}  # free: no wallet check

            async with customer(relay_url) as client:
                outcomes = [await client.ask(f"question {i}", max_tokens=20, timeout=30) for i in range(3)]
                openai_double.fail_next()
                with pytest.raises(ProviderError):  # targeted: an untargeted ask would be re-offered (failover)
                    await client.ask("this one fails", max_tokens=20, timeout=30, provider=provider.pubkey)
            after = await scrape_once_done(http, mon.url + "/metrics", 3)

    assert jobs(after, "received") == 4
    assert jobs(after, "success") == 3
    assert jobs(after, "error") == 1
    assert after[("pylon_provider_jobs_in_flight", ())] == 0
    prompt = sum(o.usage.prompt_tokens for o in outcomes)
    completion = sum(o.usage.completion_tokens for o in outcomes)
    assert after[("pylon_provider_tokens_total", (("type", "prompt"),))] == prompt
    assert after[("pylon_provider_tokens_total", (("type", "completion"),))] == completion
    model = openai_double.model
    assert after[("pylon_provider_backend_latency_seconds_count", (("model", model),))] == 4
    assert after[("pylon_provider_backend_errors_total", (("model", model),))] == 1


async def test_health_is_503_when_the_backend_is_down(relay_url, unused_tcp_port, tmp_path):
    dead = f"http://127.0.0.1:{unused_tcp_port}/v1"
    async with serving(relay_url, dead, tmp_path / "p.sqlite", models=["m"]) as provider:
        async with serve_monitor(provider) as mon, httpx.AsyncClient(timeout=10) as http:
            health = await http.get(mon.url + "/health")
    assert health.status_code == 503
    checks = health.json()["checks"]
    assert checks["backend"]["ok"] is False and "unavailable" in checks["backend"]["detail"]
    assert checks["relays"] == {"ok": True, "detail": "1/1 connected"}


async def test_wallet_checked_when_the_provider_charges(relay_url, openai_double, dev_ledger, tmp_path):
    wallet = dev_ledger.wallet("provider")
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", wallet=wallet, free=False,
                       price_msat=1_000) as provider:
        async with serve_monitor(provider) as mon, httpx.AsyncClient(timeout=10) as http:
            health = await http.get(mon.url + "/health")
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["wallet"]["ok"] is True


async def test_pylon_serve_process_metrics_health_and_json_logs(relay_url, openai_double, tmp_path,
                                                                unused_tcp_port):
    """`pylon serve --metrics-port P --log-format json` as a real process: a job moves the
    counters, /health is 200, and the log has one JSON line per job state change."""
    import asyncio
    import json
    import os
    import signal
    import sys
    from pathlib import Path

    from pylon.nostr.keys import Keys

    home = tmp_path / "provider"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_")}
    env["PYLON_HOME"] = str(home)
    serve = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pylon"), "serve", "--relay", relay_url,
        "--backend", openai_double.base_url, "--metrics-port", str(unused_tcp_port), "--log-format", "json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        line = (await asyncio.wait_for(serve.stdout.readline(), 60)).decode()
        assert json.loads(line)["event"] == "serving", line  # JSON-only stdout; printed once the monitor is up
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(base + "/health")).status_code == 200
            customer_keys = Keys.generate()
            async with customer(relay_url, keys=customer_keys) as client:
                outcome = await client.ask("metrics please", max_tokens=20, timeout=30)
            after = samples((await http.get(base + "/metrics")).text)
    finally:
        serve.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.wait(), 30)
    assert serve.returncode == 0
    assert jobs(after, "success") == 1 and jobs(after, "received") == 1
    assert after[("pylon_provider_tokens_total", (("type", "completion"),))] == outcome.usage.completion_tokens
    assert after[("pylon_provider_relay_connected", (("relay", relay_url),))] == 1
    log = [json.loads(x) for x in (await serve.stderr.read()).decode().splitlines() if x.startswith("{")]
    done = [r for r in log if r.get("job") == outcome.job_id and r.get("status") == "done"]
    assert len(done) == 1, log
    record = done[0]
    assert record["customer"] == customer_keys.public_key
    assert record["model"] == openai_double.model
    assert record["completion_tokens"] == outcome.usage.completion_tokens
    assert record["duration_s"] >= 0 and "msat" in record
