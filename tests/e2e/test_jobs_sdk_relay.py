"""The relay-agnostic path: the same ask/serve flow through the rust-nostr reference relay
(nostr-sdk LocalRelay) instead of our own, with the real vLLM server and with the double."""

from __future__ import annotations

import asyncio

import pytest

from pylon.customer.client import ProviderError
from pylon.provider.jobstore import JobStore
from pylon.nostr.keys import Keys
from tests.e2e.helpers import customer, serving, stored, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.mark.vllm
async def test_ask_stream_and_encrypted_job_through_rust_relay(sdk_relay_url, vllm_server, tmp_path):
    async with serving(sdk_relay_url, vllm_server.base_url, tmp_path / "p.sqlite",
                       partial_interval_s=0.01) as provider:
        async with customer(sdk_relay_url) as client:
            plain = await client.ask("Hello", max_tokens=16, timeout=120)
            stream = client.stream("Tell me more", max_tokens=32, timeout=120)
            pieces = [p async for p in stream]
            secret = await client.ask("secret", provider=provider.keys.npub, max_tokens=8, timeout=120)
            with pytest.raises(ProviderError, match="not served"):
                await client.ask("x", model="nope", provider=provider.pubkey, timeout=60)
    assert plain.provider == provider.pubkey and 0 < plain.usage.completion_tokens <= 16
    assert "".join(pieces) == stream.outcome.text
    assert secret.encrypted and secret.usage.completion_tokens > 0


async def test_concurrency_and_restart_through_rust_relay(sdk_relay_url, openai_double, tmp_path):
    db, keys = tmp_path / "p.sqlite", Keys.generate()
    openai_double.latency_s = 0.1
    async with customer(sdk_relay_url) as client:
        async with serving(sdk_relay_url, openai_double.base_url, db, keys=keys) as provider:
            outcomes = await asyncio.gather(*(client.ask(f"job {i}", timeout=60) for i in range(16)))
            assert openai_double.max_in_flight > 1
            openai_double.hang_next(2)
            hung = [asyncio.create_task(client.ask(f"hung {i}", timeout=60)) for i in range(2)]
            await wait_for(lambda: openai_double.in_flight == 2, what="two hanging generations")
        async with serving(sdk_relay_url, openai_double.base_url, db, keys=keys):
            outcomes += await asyncio.gather(*hung)
    assert len({o.job_id for o in outcomes}) == 18
    for outcome in outcomes[-2:]:
        assert len(await stored(sdk_relay_url, kinds=[6050], e=[outcome.job_id])) == 1
    with JobStore(db) as store:
        assert store.counts() == {"done": 18}
