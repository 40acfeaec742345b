"""The provider keeps prompt + max_tokens inside the model's context (issue 11).

On the OpenAI server DOUBLE with a 64-token context (reported as vLLM reports it:
`max_model_len` on /v1/models, exact counts on POST /tokenize), and once on the real CPU
vLLM (context 512) with the README's own prompt and a 4096-token cap.
"""

from __future__ import annotations

import pytest

from pylon.customer.client import ProviderError
from pylon.jobs.nip89 import discover
from pylon.relay.pool import RelayPool
from pylon.provider.context import fit_max_tokens, prompt_tokens_upper_bound, wanted_max_tokens
from tests.e2e.helpers import customer, serving

pytestmark = pytest.mark.timeout(180)


def test_upper_bound_covers_bytes_and_template():
    messages = [{"role": "user", "content": "héllo"}]  # 6 bytes
    assert prompt_tokens_upper_bound(messages) >= 6 + 4
    assert wanted_max_tokens(None, 4096) == 4096 and wanted_max_tokens(100, 64) == 64
    assert fit_max_tokens(4096, 512, 30) == 482 and fit_max_tokens(10, 512, 30) == 10
    assert fit_max_tokens(4096, None, 30) == 4096 and fit_max_tokens(10, 20, 30) < 1


async def test_cap_above_context_is_fitted_and_announced(relay_url, openai_double, tmp_path):
    openai_double.max_context = 64
    openai_double.reply = lambda req: "word " * 200  # would overflow the context if not capped
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", max_tokens_cap=4096) as provider:
        async with RelayPool([relay_url]) as pool:
            [info] = await discover(pool, timeout=5.0)
        assert info.context_lengths == {openai_double.model: 64} and info.max_tokens == 64
        async with customer(relay_url) as client:
            outcome = await client.ask("a short prompt", timeout=30)  # names no max_tokens
            explicit = await client.ask("another one", max_tokens=5000, timeout=30)
    sent = [r["max_tokens"] for r in openai_double.requests]
    assert sent == [64 - 3, 64 - 2]  # the exact count (the double's tokenizer) leaves room for the prompt
    assert openai_double.tokenize_calls == 2
    assert outcome.usage.completion_tokens == 61 and explicit.usage.completion_tokens == 62
    assert provider.stats.done == 2


async def test_small_request_needs_no_tokenize_call(relay_url, openai_double, tmp_path):
    openai_double.max_context = 512
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", max_tokens_cap=4096):
        async with customer(relay_url) as client:
            await client.ask("hello", max_tokens=16, timeout=30)
    assert openai_double.requests[0]["max_tokens"] == 16 and openai_double.tokenize_calls == 0


async def test_prompt_filling_the_context_gets_a_clear_error(relay_url, openai_double, tmp_path):
    openai_double.max_context = 64
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            with pytest.raises(ProviderError) as info:  # targeted: no failover to other providers
                await client.ask("word " * 80, provider=provider.pubkey, timeout=30)
    message = str(info.value)
    assert "prompt too long" in message and "80 tokens" in message and "context is 64 tokens" in message
    assert openai_double.requests == []  # never reached the backend


@pytest.mark.vllm
@pytest.mark.timeout(400)
async def test_readme_prompt_on_vllm_with_a_cap_above_its_context(relay_url, vllm_server, tmp_path):
    async with serving(relay_url, vllm_server.base_url, tmp_path / "p.sqlite", max_tokens_cap=4096) as provider:
        assert provider.context_lengths == {vllm_server.model: 512}
        async with customer(relay_url) as client:
            outcome = await client.ask("What is the capital of France?", timeout=240)
            with pytest.raises(ProviderError) as info:
                await client.ask("France " * 600, provider=provider.pubkey, timeout=120)
    assert outcome.text and outcome.usage.prompt_tokens + outcome.usage.completion_tokens <= 512
    assert "prompt too long" in str(info.value) and "context is 512 tokens" in str(info.value)
