"""The backend contract, run against the real vLLM server AND the double (same client code).

The vLLM model's weights are random, so its text is noise: assertions are about the
protocol (usage, limits, errors, structure), never about what the text says.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from pylon.provider.backends import BackendRejected, ChatChunk, ChatRequest, OpenAIBackend


def _req(peer, content: str = "Say hello to the relay.", **kw) -> ChatRequest:
    return ChatRequest(model=peer.model, messages=[{"role": "user", "content": content}], **kw)


async def test_list_models_and_health(backend_peer):
    async with OpenAIBackend(backend_peer.base_url) as backend:
        assert await backend.list_models() == [backend_peer.model]
        health = await backend.health()
    assert health.ok and health.models == [backend_peer.model] and health.error is None
    assert health.latency_ms is not None and health.latency_ms >= 0


async def test_chat_reports_text_usage_and_model(backend_peer):
    async with OpenAIBackend(backend_peer.base_url) as backend:
        result = await backend.chat(_req(backend_peer, max_tokens=12, temperature=0.0))
    assert isinstance(result.text, str) and result.text
    assert result.model == backend_peer.model
    assert result.prompt_tokens and result.prompt_tokens > 0
    assert result.completion_tokens and 1 <= result.completion_tokens <= 12
    assert result.finish_reason in ("stop", "length")


async def test_stream_deltas_join_to_the_non_streamed_text(backend_peer):
    """Greedy decoding is deterministic, so the streamed deltas must join to exactly the text
    of the same request without streaming, and the final chunk carries the usage."""
    req = _req(backend_peer, max_tokens=16, temperature=0.0)
    async with OpenAIBackend(backend_peer.base_url) as backend:
        whole = await backend.chat(req)
        chunks: list[ChatChunk] = [c async for c in backend.stream_chat(req)]
    assert len(chunks) >= 2
    final = chunks[-1]
    assert final.text == "" and final.finish_reason == whole.finish_reason
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == whole.text
    assert final.usage == (whole.prompt_tokens, whole.completion_tokens)


async def test_max_tokens_is_honoured(backend_peer):
    async with OpenAIBackend(backend_peer.base_url) as backend:
        result = await backend.chat(_req(backend_peer, "Write a long story about relays and keys.",
                                         max_tokens=3))
        streamed = [c async for c in backend.stream_chat(_req(backend_peer, max_tokens=2))]
    assert result.completion_tokens is not None and result.completion_tokens <= 3
    if result.finish_reason == "length":
        assert result.completion_tokens == 3
    assert streamed[-1].usage is not None and streamed[-1].usage[1] <= 2


async def test_all_sampling_parameters_are_accepted(backend_peer):
    req = _req(backend_peer, max_tokens=8, temperature=0.7, top_p=0.9, top_k=20,
               frequency_penalty=0.5, stop=["\n\n"], seed=7)
    async with OpenAIBackend(backend_peer.base_url) as backend:
        result = await backend.chat(req)
    assert result.completion_tokens is not None and result.completion_tokens <= 8


async def test_unknown_model_is_rejected_naming_the_model(backend_peer):
    async with OpenAIBackend(backend_peer.base_url) as backend:
        bad = ChatRequest(model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        with pytest.raises(BackendRejected) as info:
            await backend.chat(bad)
        assert info.value.status == 404
        assert "no-such-model" in info.value.message
        with pytest.raises(BackendRejected) as info2:
            async for _ in backend.stream_chat(bad):
                pass
        assert info2.value.status == 404 and "no-such-model" in info2.value.message


async def test_context_too_long_is_rejected_with_the_servers_reason(backend_peer):
    long_prompt = " ".join(["relay"] * 700)  # > 512 tokens in both tokenisers
    async with OpenAIBackend(backend_peer.base_url) as backend:
        with pytest.raises(BackendRejected) as info:
            await backend.chat(_req(backend_peer, long_prompt, max_tokens=8))
    assert info.value.status == 400
    assert "context length" in info.value.message


async def test_json_schema_response_format_gives_parseable_json(backend_peer):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    async with OpenAIBackend(backend_peer.base_url) as backend:
        result = await backend.chat(_req(backend_peer, "Is the relay up? Answer in JSON.",
                                         max_tokens=200, temperature=0.0, response_format=fmt))
    data = json.loads(result.text)
    assert data["answer"] in ("yes", "no") and isinstance(data["sure"], bool)


async def test_32_concurrent_requests_complete(backend_peer):
    async with OpenAIBackend(backend_peer.base_url) as backend:
        reqs = [_req(backend_peer, f"Request number {i}", max_tokens=8, seed=i) for i in range(32)]
        results = await asyncio.wait_for(asyncio.gather(*(backend.chat(r) for r in reqs)), 240)
    assert len(results) == 32
    assert all(r.completion_tokens is not None and 1 <= r.completion_tokens <= 8 for r in results)
