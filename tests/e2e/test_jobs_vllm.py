"""Whole jobs against the REAL vLLM server (CPU, tiny random Llama) through the embedded relay.

The model's weights are random, so its text is noise: these tests check what Pylon controls
(delivery, usage, limits, concurrency, recovery, encryption), never the words.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pylon.customer.client import ProviderError
from pylon.provider.jobstore import JobStore
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import customer, serving, stored, wait_for, wait_stored

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]


async def test_ask_reports_usage_and_model(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite") as provider:
        assert provider.served_models == [vllm_server.model]  # taken from /v1/models
        async with customer(relay_url) as client:
            outcome = await client.ask("Hello, who are you?", max_tokens=16, temperature=0.0, timeout=120)
    assert outcome.provider == provider.pubkey and outcome.model == vllm_server.model
    assert outcome.usage.prompt_tokens > 0 and 0 < outcome.usage.completion_tokens <= 16
    assert isinstance(outcome.text, str)
    row = JobStore(tmp_path / "p.sqlite").get(outcome.job_id)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (
        "done", outcome.usage.prompt_tokens, outcome.usage.completion_tokens)


async def test_stream_matches_the_result(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite", partial_interval_s=0.01):
        async with customer(relay_url) as client:
            stream = client.stream("Tell me a story.", max_tokens=64, timeout=120)
            pieces = [p async for p in stream]
    assert "".join(pieces) == stream.outcome.text
    assert stream.outcome.usage.completion_tokens <= 64


async def test_chat_messages(relay_url, vllm_server, tmp_path):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}]
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite"):
        async with customer(relay_url) as client:
            chat = await client.ask(messages, max_tokens=4, timeout=120)
            plain = await client.ask("Capital of France?", max_tokens=4, timeout=120)
    # the chat template wraps every turn: the whole conversation is more prompt than the last turn
    assert chat.usage.prompt_tokens > plain.usage.prompt_tokens


async def test_model_not_served(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            with pytest.raises(ProviderError, match=f"not served here; served models: {vllm_server.model}"):
                await client.ask("x", model="llama-70b", provider=provider.pubkey, timeout=60)


async def test_max_tokens_honoured_and_capped(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite", max_tokens_cap=5):
        async with customer(relay_url) as client:
            asked = await client.ask("Count to a hundred.", max_tokens=3, timeout=120)
            capped = await client.ask("Count to a hundred.", max_tokens=500, timeout=120)
    assert 0 < asked.usage.completion_tokens <= 3
    assert 0 < capped.usage.completion_tokens <= 5


async def test_32_jobs_in_flight_complete_concurrently(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite", concurrency=32) as provider:
        async with customer(relay_url) as client:
            finished: list[int] = []

            async def one(i: int):
                outcome = await client.ask(f"job number {i}", max_tokens=32, timeout=240)
                finished.append(provider.stats.generations)  # generations started when this one ended
                return outcome

            outcomes = await asyncio.gather(*(one(i) for i in range(32)))
    assert len({o.job_id for o in outcomes}) == 32 and all(o.usage.completion_tokens for o in outcomes)
    assert provider.stats.max_backend_in_flight > 1       # vLLM had several requests at once
    assert finished[0] > 1  # more jobs were running on vLLM before the first one came back
    assert provider.stats.done == 32 and provider.stats.generations == 32


async def test_provider_restart_mid_flight(relay_url, vllm_server, tmp_path):
    db = tmp_path / "p.sqlite"
    keys = Keys.generate()
    async with customer(relay_url) as client:
        async with serving(relay_url, vllm_server.base_url, db, keys=keys) as provider:
            first = [asyncio.create_task(client.ask(f"long story {i}", max_tokens=400, timeout=240))
                     for i in range(3)]
            await wait_for(lambda: provider.stats.backend_in_flight == 3, timeout=120, what="3 generations")
        later = [asyncio.create_task(client.ask(f"late {i}", max_tokens=8, timeout=240)) for i in range(2)]
        await wait_stored(relay_url, 5, kinds=[5050], authors=[client.pubkey])
        async with serving(relay_url, vllm_server.base_url, db, keys=keys):
            outcomes = await asyncio.gather(*first, *later)
    for outcome in outcomes:
        assert len(await stored(relay_url, kinds=[6050], e=[outcome.job_id])) == 1
    with JobStore(db) as store:
        assert {store.status(o.job_id) for o in outcomes} == {"done"}
        assert store.counts() == {"done": 5}


async def test_two_providers_race(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "a.sqlite") as a, \
            serving(relay_url, vllm_server.base_url, tmp_path / "b.sqlite") as b:
        async with customer(relay_url) as client:
            outcome = await client.ask("race", max_tokens=8, timeout=120, collect_s=120, collect_max=2)
    assert {outcome.provider, *(o.provider for o in outcome.other_results)} == {a.pubkey, b.pubkey}
    assert len(await stored(relay_url, kinds=[6050], e=[outcome.job_id])) == 2


async def test_encrypted_job_hidden_from_a_third_party(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite") as provider:
        async with RelayPool([relay_url], keys=Keys.generate()) as spy:
            async with spy.subscribe([Filter.of(kinds=[5050, 6050, 7000])]) as seen:
                async with customer(relay_url) as client:
                    outcome = await client.ask("my secret question", provider=provider.keys.npub,
                                               max_tokens=16, timeout=120)
                await wait_for(lambda: seen.pending_events() >= 2, what="the spy to see request and result")
                events = [await seen.next(1) for _ in range(seen.pending_events())]
    assert outcome.encrypted and outcome.usage.completion_tokens > 0
    for event in events:
        assert ["encrypted"] in event.tags
        assert "secret" not in event.to_json()
        if event.kind == 6050 and outcome.text.strip():
            assert outcome.text not in event.to_json()


@pytest.mark.slow
async def test_backend_killed_mid_job(relay_url, tmp_path):
    """A vLLM of its own (the shared one must live on) is killed while generating."""
    from pylon.devstack.vllm import missing_reason, start_vllm

    if missing_reason():
        pytest.skip(missing_reason())
    server = await asyncio.to_thread(start_vllm)
    try:
        async with serving(relay_url, server.base_url, tmp_path / "p.sqlite", health_interval_s=3600) as provider:
            async with customer(relay_url) as client:
                job = asyncio.create_task(client.ask("a very long story", max_tokens=400,
                                                     provider=provider.pubkey, timeout=120))
                await wait_for(lambda: provider.stats.backend_in_flight == 1, timeout=60, what="generation")
                os.killpg(server.process.pid, signal.SIGKILL)
                with pytest.raises(ProviderError, match="backend"):
                    await job
                await wait_for(lambda: not provider.backend_health.ok, what="health to notice")
                with pytest.raises(ProviderError, match="unavailable"):  # still answering, with an error
                    await client.ask("anyone home?", provider=provider.pubkey, timeout=60)
            # the job that lost its backend failed; the next one was refused at intake (backend down)
            assert provider.stats.errors == 1 and provider.stats.rejected == 1
    finally:
        await asyncio.to_thread(server.stop)
