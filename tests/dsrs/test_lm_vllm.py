"""A DSPy JSONAdapter program end to end through the swarm with the real CPU vLLM server
behind the provider: the JSON schema DSPy derives from the signature travels as the job's
response_format, and vLLM's structured output makes even the tiny random model return
parseable fields."""

from __future__ import annotations

import asyncio

import dspy
import pytest

from dsrs_bridge.lm import close, hub_of, pylon_lm
from pylon.nostr.keys import Keys

pytestmark = pytest.mark.vllm


async def test_json_adapter_program_against_vllm(vllm_server, tmp_path):
    from nexus_relay import running_relay
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.provider.provider import Provider

    backend = OpenAIBackend(vllm_server.base_url)
    async with running_relay(tmp_path / "relay.sqlite") as relay:
        provider = Provider([relay.url], backend, keys=Keys.generate(), models=[vllm_server.model], free=True,
                            db_path=tmp_path / "provider.sqlite")
        async with provider.running():
            lm = pylon_lm(vllm_server.model, relays=[relay.url], keys=Keys.generate(), cache=False,
                          timeout=120, max_tokens=48, temperature=0.0)
            # The tiny model's context is 512 tokens and DSPy's JSONAdapter prompt is long:
            # a short signature with closed output types (bool, enum) fits and stays finite.
            sig = dspy.Signature("q -> ok: bool, pick: Literal['a', 'b']", "Say.")

            def go():
                with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                    return dspy.Predict(sig)(q="2+2=4?")

            try:
                out = await asyncio.to_thread(go)
            finally:
                await asyncio.to_thread(close, lm)
    await backend.aclose()
    assert isinstance(out.ok, bool) and out.pick in ("a", "b")
    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] > 0 and entry["usage"]["completion_tokens"] > 0
    data = entry["response"].provider_data["pylon"]
    assert data["provider"] == provider.keys.public_key and len(data["job_id"]) == 64
    assert hub_of(lm).jobs_started == 1


async def test_truncation_and_streaming_against_vllm(vllm_server, tmp_path):
    """vLLM's finish_reason reaches DSPy ("length" when cut at max_tokens), and a streamed
    answer arrives in several chunks (first token at once, then 50 ms partials)."""
    from nexus_relay import running_relay
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.provider.provider import Provider

    class RawCall(dspy.Module):  # the random model's text is not parsed: stream the LM itself
        def forward(self, question):
            return dspy.Prediction(answer=dspy.settings.lm(question)[0])

    backend = OpenAIBackend(vllm_server.base_url)
    async with running_relay(tmp_path / "relay.sqlite") as relay:
        provider = Provider([relay.url], backend, keys=Keys.generate(), models=[vllm_server.model],
                            db_path=tmp_path / "provider.sqlite")
        async with provider.running():
            async with pylon_lm(vllm_server.model, relays=[relay.url], keys=Keys.generate(), cache=False,
                                timeout=120, temperature=0.0, max_tokens=64) as lm:
                await lm.acall("Tell me a long story", max_tokens=6)
                assert lm.history[-1]["response"].finish_reason == "length"
                chunks = []
                with dspy.context(lm=lm):
                    async for item in dspy.streamify(RawCall())(question="Tell me about relays"):
                        if not isinstance(item, dspy.Prediction) and item.choices[0].delta.content:
                            chunks.append(item.choices[0].delta.content)
    await backend.aclose()
    assert len(chunks) >= 2 and lm.history[-1]["outputs"][0] == "".join(chunks)
