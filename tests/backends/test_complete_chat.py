"""OpenAIBackend.complete_chat: the non-streamed call the provider makes for a job whose
customer reads only the result. Against the OpenAI server double (text, usage, finish
reason, its faults) and, for what the double does not speak (tool calls, odd bodies), a
scripted aiohttp server; the real vLLM path is tests/e2e/test_jobs_vllm.py (its jobs are not
streamed)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from pylon.provider.backends import ChatRequest, OpenAIBackend
from pylon.provider.backends.errors import BackendProtocolError, BackendRejected, BackendUnavailable
from tests.backends.scripted import scripted_server


def _req(**kw) -> ChatRequest:
    return ChatRequest(model=kw.pop("model", "double-model"), messages=[{"role": "user", "content": "say hi"}], **kw)


async def test_whole_answer_with_usage_and_finish_reason(openai_double):
    async with OpenAIBackend(openai_double.base_url) as backend:
        final = await backend.complete_chat(_req(max_tokens=3))
    assert final.text.strip() == "This is the" and final.finish_reason == "length"
    assert final.usage == (2, 3)
    assert openai_double.requests[0]["stream"] is False and "stream_options" not in openai_double.requests[0]


async def test_backend_faults_become_typed_errors(openai_double):
    async with OpenAIBackend(openai_double.base_url) as backend:
        openai_double.fail_next(status=503, message="overloaded")
        with pytest.raises(BackendRejected, match="overloaded"):
            await backend.complete_chat(_req())
        openai_double.drop_next()
        with pytest.raises(BackendUnavailable):
            await backend.complete_chat(_req())
        assert (await backend.complete_chat(_req())).text.endswith("say hi")  # and the pool still works


def _answering(body: bytes):
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")
    return answer


@pytest.mark.parametrize("arguments", ['{"city":"Oslo"}', {"city": "Oslo"}])
async def test_tool_calls_come_back_whole(arguments):
    body = json.dumps({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}},
            {"id": "bad", "type": "function", "function": {"arguments": "{}"}}]}}],  # no name: dropped
        "usage": {"prompt_tokens": 3, "completion_tokens": 9}}).encode()
    async with scripted_server(_answering(body)) as url, OpenAIBackend(url) as backend:
        final = await backend.complete_chat(_req(model="m"))
    assert (final.text, final.finish_reason, final.usage) == ("", "tool_calls", (3, 9))
    assert final.tool_calls == [{"id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]


@pytest.mark.parametrize("body, error", [
    (b"<html>busy</html>", "non-JSON"),
    (b'{"choices": []}', "without choices"),
    (b'{"choices": "nope"}', "unexpected completion answer"),
    (b'{"error": {"message": "out of KV cache"}}', "out of KV cache"),
])
async def test_bad_answers_are_one_clear_error(body, error):
    async with scripted_server(_answering(body)) as url, OpenAIBackend(url) as backend:
        with pytest.raises(Exception, match=error) as caught:
            await backend.complete_chat(_req(model="m"))
    assert isinstance(caught.value, (BackendProtocolError, BackendRejected))
