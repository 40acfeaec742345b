"""Streamed `tool_calls` deltas (id and name once, arguments in pieces) come back as whole
calls on the final chunk. A scripted SSE server stands in for the backend here (the OpenAI
double speaks no tools); the real vLLM path is tests/gateway/test_openai_sdk.py."""

from __future__ import annotations

import json

from aiohttp import web

from pylon.provider.backends import ChatRequest, OpenAIBackend
from tests.backends.scripted import scripted_server

CHUNKS = [
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '"Oslo"}'}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "noop", "arguments": "{}"}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
     "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
]


async def _stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for chunk in CHUNKS:
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def test_streamed_tool_call_deltas_are_assembled():
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    async with scripted_server(_stream) as url, OpenAIBackend(url) as backend:
        chunks = [c async for c in backend.stream_chat(ChatRequest(
            model="m", messages=[{"role": "user", "content": "weather?"}], tools=tools))]
        plain = [c async for c in backend.stream_chat(ChatRequest(
            model="m", messages=[{"role": "user", "content": "weather?"}]))]
    last = chunks[-1]
    assert (last.finish_reason, last.usage) == ("tool_calls", (3, 9))
    assert last.tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": "{}"}},
    ]
    assert plain[-1].tool_calls is None  # a request without tools does not assemble any
