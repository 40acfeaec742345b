"""Failures map to typed errors: down/timeouts/dropped connections -> BackendUnavailable,
HTTP errors -> BackendRejected with the server's message. Faults are injected with the
double (a real server will not fail on demand); "down" needs no server at all."""

from __future__ import annotations

import socket

import pytest

from pylon.provider.backends import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    ChatRequest,
    OpenAIBackend,
)


def _req(model: str, **kw) -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": "one two three"}], **kw)


def _closed_port() -> int:
    """A port with nothing listening (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_backend_down_is_unavailable_for_every_call():
    async with OpenAIBackend(f"http://127.0.0.1:{_closed_port()}/v1") as backend:
        with pytest.raises(BackendUnavailable):
            await backend.list_models()
        with pytest.raises(BackendUnavailable):
            await backend.chat(_req("m"))
        with pytest.raises(BackendUnavailable):
            async for _ in backend.stream_chat(_req("m")):
                pass
        health = await backend.health()
    assert not health.ok and "unavailable" in (health.error or "")
    assert issubclass(BackendUnavailable, BackendError)


async def test_server_error_is_rejected_with_its_message(openai_double):
    openai_double.fail_next(2, status=500, message="engine exploded")
    async with OpenAIBackend(openai_double.base_url) as backend:
        with pytest.raises(BackendRejected) as info:
            await backend.chat(_req(openai_double.model))
        assert (info.value.status, info.value.message) == (500, "engine exploded")
        with pytest.raises(BackendRejected) as info:
            async for _ in backend.stream_chat(_req(openai_double.model)):
                pass
        assert info.value.status == 500
        # the fault is used up: the same client works again
        assert (await backend.chat(_req(openai_double.model))).text


async def test_hanging_server_times_out_as_unavailable(openai_double):
    openai_double.hang_next(2)
    async with OpenAIBackend(openai_double.base_url, timeout=0.3) as backend:
        with pytest.raises(BackendUnavailable, match="Timeout"):
            await backend.chat(_req(openai_double.model))
        with pytest.raises(BackendUnavailable, match="Timeout"):
            async for _ in backend.stream_chat(_req(openai_double.model)):
                pass


async def test_connection_dropped_mid_stream_is_unavailable(openai_double):
    openai_double.drop_next(2)
    async with OpenAIBackend(openai_double.base_url) as backend:
        got: list[str] = []
        with pytest.raises(BackendUnavailable):
            async for chunk in backend.stream_chat(_req(openai_double.model)):
                got.append(chunk.text)
        assert got  # text had arrived before the connection went
        with pytest.raises(BackendUnavailable):
            await backend.chat(_req(openai_double.model))


async def test_error_event_inside_a_stream_is_rejected(openai_double):
    openai_double.error_in_stream_next(message="out of KV cache")
    async with OpenAIBackend(openai_double.base_url) as backend:
        with pytest.raises(BackendRejected) as info:
            async for _ in backend.stream_chat(_req(openai_double.model)):
                pass
    assert info.value.status == 500 and info.value.message == "out of KV cache"


async def test_stream_without_usage_reports_none(openai_double):
    """llama.cpp's server sends no usage in streams: Pylon reports None, estimates nothing."""
    openai_double.stream_usage = False
    async with OpenAIBackend(openai_double.base_url) as backend:
        chunks = [c async for c in backend.stream_chat(_req(openai_double.model))]
    assert chunks[-1].usage is None and chunks[-1].finish_reason == "stop"
    assert "".join(c.text for c in chunks)


async def test_only_set_parameters_are_sent(openai_double):
    async with OpenAIBackend(openai_double.base_url, api_key="sk-test-secret") as backend:
        await backend.chat(_req(openai_double.model))
        await backend.chat(_req(openai_double.model, max_tokens=5, top_k=40, temperature=0.0, seed=3))
        [c async for c in backend.stream_chat(_req(openai_double.model))]
        assert "sk-test-secret" not in repr(backend)
    plain, full, streamed = openai_double.requests
    assert set(plain) == {"model", "messages", "stream"} and plain["stream"] is False
    assert (full["max_tokens"], full["top_k"], full["temperature"], full["seed"]) == (5, 40, 0.0, 3)
    assert "top_p" not in full and "frequency_penalty" not in full
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}


async def test_requests_run_concurrently_over_the_pool(openai_double):
    """64 requests held open by the server are all in flight at once: nothing serialises them
    (httpx's default pool of 10 would)."""
    import asyncio

    openai_double.hang_next(64)
    async with OpenAIBackend(openai_double.base_url) as backend:
        tasks = [asyncio.create_task(backend.chat(_req(openai_double.model))) for _ in range(64)]
        try:
            async with asyncio.timeout(20):
                while openai_double.in_flight < 64:  # condition wait, bounded by the timeout
                    await asyncio.sleep(0.01)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert openai_double.max_in_flight == 64


async def test_scripted_reply_reaches_the_caller(openai_double):
    openai_double.reply = lambda req: f"scripted for {req['messages'][-1]['content']}"
    async with OpenAIBackend(openai_double.base_url) as backend:
        result = await backend.chat(_req(openai_double.model))
    assert result.text == "scripted for one two three"
