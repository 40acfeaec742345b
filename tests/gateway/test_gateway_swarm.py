"""The gateway over the OpenAI double: models from discovery, curl, health and metrics,
64 concurrent streams over one relay connection, a paid request whose receipt matches."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import httpx
import openai
import pytest

from tests.gateway.conftest import gateway_stack

CHAT = {"model": "double-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}


async def test_models_lists_the_live_swarm(double_stack):
    async with httpx.AsyncClient(base_url=double_stack.base_url, timeout=30) as http:
        body = (await http.get("/models")).json()
        assert body["object"] == "list"
        (entry,) = [m for m in body["data"] if m["id"] == "double-model"]
        assert entry["owners"] == 1 and entry["object"] == "model"
        assert entry["pricing"] == {"msat_per_job": 0, "msat_per_1k_tokens": 0}
        one = (await http.get("/models/double-model")).json()
        assert one["id"] == "double-model"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl(double_stack):
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "30", f"{double_stack.base_url}/chat/completions",
        "-H", "Content-Type: application/json", "-d", json.dumps(CHAT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    body = json.loads(out)
    assert body["choices"][0]["message"]["content"].startswith("This is the OpenAI double")
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] in ("length", "stop")


async def test_completions_endpoint(double_stack):
    client = openai.AsyncOpenAI(base_url=double_stack.base_url, api_key="x", max_retries=0)
    resp = await client.completions.create(model="double-model", prompt=["one", "two"], max_tokens=3)
    await client.close()
    assert resp.object == "text_completion" and [c.index for c in resp.choices] == [0, 1]
    assert all(c.text for c in resp.choices)


async def test_health_and_metrics(double_stack):
    async with httpx.AsyncClient(base_url=double_stack.root_url, timeout=30) as http:
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["ok"] is True
        await http.post("/v1/chat/completions", json=CHAT)
        metrics = (await http.get("/metrics")).text
    assert 'pylon_gateway_requests_total{code="200",endpoint="/v1/chat/completions"} 1.0' in metrics
    assert "pylon_gateway_jobs_total 1.0" in metrics


async def test_64_concurrent_streams_over_one_relay_connection(relay_url, openai_double, tmp_path):
    from nexus_relay import running_relay

    async with running_relay(tmp_path / "relay.sqlite") as relay:
        async with gateway_stack(relay.url, openai_double.base_url, tmp_path, model="double-model",
                                 provider_kwargs={"concurrency": 64}) as stack:
            before = relay.stats.connections
            client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0, timeout=120,
                                        http_client=None)

            async def one(i: int) -> str:
                stream = await client.chat.completions.create(
                    model="double-model", max_tokens=6, stream=True,
                    messages=[{"role": "user", "content": f"question {i}"}])
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

            texts = await asyncio.gather(*(one(i) for i in range(64)))
            await client.close()
            assert all(t.startswith("This is the OpenAI double") for t in texts)
            assert relay.stats.connections == before  # the gateway opened no connection per request
            assert len(openai_double.requests) == 64


async def test_paid_request_receipt_matches_the_pylon_object(relay_url, openai_double, tmp_path, dev_ledger):
    from pylon.customer.ledger import Ledger

    dev_ledger.fund("customer", 100_000)
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model",
                             wallet=dev_ledger.wallet("provider"), client_wallet=dev_ledger.wallet("customer"),
                             provider_kwargs={"price_msat": 2000, "free": False}, max_msat=5000) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
            resp = await http.post("/chat/completions", json=CHAT, headers={"X-Pylon-Max-Msat": "3000"})
        assert resp.status_code == 200, resp.text
        pylon = resp.json()["pylon"]
        assert pylon["amount_msat"] == 2000 and pylon["paid_msat"] >= 2000
        receipts = stack.client.payments.ledger.receipts()
    (receipt,) = [r for r in receipts if r.job_id == pylon["job_id"]]
    assert receipt.id == pylon["receipt_id"] and receipt.payment_hash == pylon["payment_hash"]
    assert receipt.amount_msat == pylon["amount_msat"]
    assert dev_ledger.wallet("customer").ledger.balance("customer") == 100_000 - pylon["paid_msat"]
