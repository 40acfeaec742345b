"""Every error the gateway answers, in OpenAI's error shape with its status code, and the
cancellation a disconnecting client causes (the relay stores the kind-5 deletion)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from pylon.nostr.keys import Keys
from tests.gateway.conftest import gateway_stack
from tests.e2e.helpers import wait_for, wait_stored


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


CHAT = {"model": "double-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}


async def test_400_for_bad_parameters_before_anything_is_published(double_stack):
    async with httpx.AsyncClient(base_url=double_stack.base_url, timeout=30) as http:
        err = _error(await http.post("/chat/completions", json={**CHAT, "temperature": 9}), 400)
        assert err["param"] == "temperature"
        _error(await http.post("/chat/completions", content=b"{not json"), 400)
        _error(await http.post("/chat/completions", json={"messages": []}), 400)
        _error(await http.post("/chat/completions", json={**CHAT, "messages": [{"role": "wizard", "content": "x"}]}),
               400)
        err = _error(await http.post("/chat/completions", json=CHAT, headers={"X-Pylon-Max-Msat": "lots"}), 400)
        assert err["param"] == "X-Pylon-Max-Msat"
        _error(await http.post("/chat/completions", json=CHAT, headers={"X-Pylon-Provider": "npub1nope"}), 400)
        for empty in ("", None, "   "):  # was published, then refused by the provider (a 502, a refused job)
            err = _error(await http.post("/chat/completions",
                                         json={**CHAT, "messages": [{"role": "user", "content": empty}]}), 400)
            assert err["param"] == "messages"
        _error(await http.post("/completions", json={"model": CHAT.get("model"), "prompt": ""}), 400)
    assert double_stack.double.requests == []  # nothing reached a provider
    assert double_stack.provider.stats.received == 0  # nor the relay: no job was published


async def test_404_for_a_model_no_live_provider_serves(double_stack):
    async with httpx.AsyncClient(base_url=double_stack.base_url, timeout=30) as http:
        err = _error(await http.post("/chat/completions", json={**CHAT, "model": "gpt-nowhere"}), 404)
        assert err["code"] == "model_not_found" and "double-model" in err["message"]
        _error(await http.get("/models/gpt-nowhere"), 404)
        _error(await http.get("/no-such-endpoint"), 404)


async def test_413_for_a_body_over_the_limit(double_stack):
    double_stack.gateway.max_body_bytes = 1 << 20
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    async with httpx.AsyncClient(base_url=double_stack.base_url, timeout=30) as http:
        _error(await http.post("/chat/completions", json=big), 413)
        # under the gateway's limit, over the relay's (64 KiB events): 413 as well, not a 503 that
        # OpenAI's SDK would retry three times
        err = _error(await http.post("/chat/completions",
                                     json={**CHAT, "messages": [{"role": "user", "content": "y" * 100_000}]}), 413)
        assert err["code"] == "request_too_large" and "too large" in err["message"]
    assert double_stack.double.requests == []


async def test_401_with_a_wrong_api_key(relay_url, openai_double, tmp_path):
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model",
                             api_key="s3cret") as stack:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            _error(await http.post("/chat/completions", json=CHAT), 401)
            _error(await http.post("/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"}), 401)
            ok = await http.post("/chat/completions", json=CHAT, headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200, ok.text
            assert (await http.get(stack.root_url + "/health")).status_code == 200  # health needs no key


async def test_402_when_the_quote_is_refused(relay_url, openai_double, tmp_path, dev_ledger):
    """A priced provider and a gateway without a wallet: the quote is refused, nothing paid."""
    provider_wallet = dev_ledger.wallet("provider")
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model",
                             wallet=provider_wallet, provider_kwargs={"price_msat": 5000, "free": False},
                             timeout=10.0) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
            err = _error(await http.post("/chat/completions", json=CHAT), 402)
            assert "5000" in err["message"] or "5,000" in err["message"]
    assert openai_double.requests == []


async def test_402_above_the_callers_bid_says_what_an_http_caller_can_change(relay_url, openai_double, tmp_path,
                                                                             dev_ledger):
    """The CLI's hint (`--bid-msat`) means nothing to an HTTP client: the gateway names its header."""
    dev_ledger.fund("customer", 100_000)
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model",
                             wallet=dev_ledger.wallet("provider"), client_wallet=dev_ledger.wallet("customer"),
                             provider_kwargs={"price_msat": 5000, "free": False}, max_msat=10_000,
                             timeout=10.0) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
            err = _error(await http.post("/chat/completions", json=CHAT, headers={"X-Pylon-Max-Msat": "10"}), 402)
    assert "X-Pylon-Max-Msat" in err["message"] and "--bid-msat" not in err["message"], err
    assert openai_double.requests == [] and await dev_ledger.wallet("customer").balance() == 100_000


async def test_503_when_no_provider_answers(relay_url, openai_double, tmp_path):
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model",
                             with_provider=False, timeout=2.0) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            err = _error(await http.post("/chat/completions", json={**CHAT, "model": None}), 503)
            assert err["code"] == "no_provider_answered"


async def test_504_when_the_provider_never_finishes(relay_url, openai_double, tmp_path):
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model",
                             timeout=3.0) as stack:
        openai_double.hang_next()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            err = _error(await http.post("/chat/completions", json=CHAT), 504)
            assert err["code"] == "job_timeout"


async def test_a_disconnecting_client_cancels_its_job(double_stack):
    """The HTTP client gives up mid-job: the gateway publishes the kind-5 cancellation."""
    double_stack.double.hang_next()
    async with httpx.AsyncClient(base_url=double_stack.base_url, timeout=1.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/chat/completions", json=CHAT)
    cancels = await wait_stored(double_stack.relay_url, 1, kinds=[5], timeout=20)
    assert cancels[0].pubkey == double_stack.client.pubkey
    request_ids = [t[1] for t in cancels[0].tags if t and t[0] == "e"]
    assert request_ids and all(len(i) == 64 for i in request_ids)
    await wait_for(lambda: double_stack.provider.stats.cancelled >= 1, 20, "the provider to cancel the job")
