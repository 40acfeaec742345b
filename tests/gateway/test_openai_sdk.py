"""The official `openai` SDK (sync, async, streaming, n=2, json_schema) against the gateway,
over a local relay and a provider on the real CPU vLLM."""

from __future__ import annotations

import asyncio
import json

import openai


def _sync_client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=60)


async def test_sync_chat_completion(vllm_stack):
    client = _sync_client(vllm_stack)
    resp = await asyncio.to_thread(client.chat.completions.create, model=vllm_stack.model, max_tokens=8,
                                   messages=[{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Say hi"}])
    assert resp.object == "chat.completion"
    assert len(resp.choices) == 1 and isinstance(resp.choices[0].message.content, str)
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage.completion_tokens >= 1 and resp.usage.total_tokens == (
        resp.usage.prompt_tokens + resp.usage.completion_tokens)
    pylon = resp.model_extra["pylon"]
    assert pylon["provider"].startswith("npub1") and len(pylon["job_id"]) == 64 and pylon["paid_msat"] == 0


async def test_async_client_and_n2(vllm_stack):
    client = openai.AsyncOpenAI(base_url=vllm_stack.base_url, api_key="unused", max_retries=0, timeout=60)
    resp = await client.chat.completions.create(model=vllm_stack.model, max_tokens=6, n=2,
                                                messages=[{"role": "user", "content": "two answers"}])
    await client.close()
    assert [c.index for c in resp.choices] == [0, 1]
    jobs = resp.model_extra["pylon"]["jobs"]
    assert len({j["job_id"] for j in jobs}) == 2  # n=2 is two jobs


async def test_streaming_with_usage(vllm_stack):
    client = openai.AsyncOpenAI(base_url=vllm_stack.base_url, api_key="unused", max_retries=0, timeout=60)
    stream = await client.chat.completions.create(
        model=vllm_stack.model, max_tokens=12, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream please"}])
    text, finishes, usage, pylon = "", [], None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
                pylon = chunk.model_extra.get("pylon")
        if chunk.usage is not None:
            usage = chunk.usage
    await client.close()
    assert text and finishes in (["stop"], ["length"])
    assert usage is not None and usage.completion_tokens >= 1
    assert pylon is not None and pylon["provider"].startswith("npub1")


async def test_json_schema_reaches_the_backend(vllm_stack):
    client = _sync_client(vllm_stack)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"],
              "additionalProperties": False}
    resp = await asyncio.to_thread(
        client.chat.completions.create, model=vllm_stack.model, max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        messages=[{"role": "user", "content": "json"}])
    data = json.loads(resp.choices[0].message.content)  # structured output: valid JSON even from random weights
    assert data["answer"] in ("yes", "no")


async def test_tool_call_through_the_swarm(vllm_stack):
    """tools / tool_choice travel in the job; vLLM decodes a named tool call under its schema
    (valid even from random weights); tool_calls come back in OpenAI's shape."""
    client = _sync_client(vllm_stack)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                       "required": ["city"]}}}]
    resp = await asyncio.to_thread(
        client.chat.completions.create, model=vllm_stack.model, max_tokens=40, tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome")
