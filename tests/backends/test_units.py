"""Pure pieces of the backend layer: SSE framing, error dialects, URLs, request validation,
and the vLLM helper's refusal when the set-up has not run."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pylon.provider.backends import ChatRequest, normalize_base_url
from pylon.provider.backends.openai import error_message
from pylon.provider.backends.sse import iter_sse_data
from pylon.errors import ConfigError


async def _lines(*lines: str):
    for line in lines:
        yield line


async def _collect(*lines: str) -> list[str]:
    return [d async for d in iter_sse_data(_lines(*lines))]


async def test_sse_events_comments_and_spacing():
    got = await _collect(": ping", "data: {\"a\":1}", "", "data:{\"b\":2}", "", "event: x", "data: [DONE]", "")
    assert got == ['{"a":1}', '{"b":2}', "[DONE]"]


async def test_sse_multiline_event_and_unterminated_tail():
    assert await _collect("data: one", "data: two", "", "data: tail") == ["one\ntwo", "tail"]
    assert await _collect("data: crlf\r", "\r") == ["crlf"]
    assert await _collect("", "", ": only a comment") == []


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"error": {"message": "The model `x` does not exist.", "code": 404}}', "The model `x` does not exist."),
        (b'{"error": "model \\"x\\" not found, try pulling it first"}', 'model "x" not found, try pulling it first'),
        (b'{"object": "error", "message": "old vllm says no"}', "old vllm says no"),
        (b'{"detail": [{"loc": ["body"], "msg": "bad"}]}', '[{"loc": ["body"], "msg": "bad"}]'),
        (b"plain text failure", "plain text failure"),
        (b"", "Internal Server Error"),
    ],
)
def test_error_message_dialects(body, expected):
    assert error_message(body, "Internal Server Error") == expected


def test_error_message_is_bounded():
    assert len(error_message(b"x" * 10_000, "")) == 500


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://host/api/openai/v1", "https://host/api/openai/v1"),
    ],
)
def test_normalize_base_url(url, expected):
    assert normalize_base_url(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host/v1", "http://", ""])
def test_bad_base_url_is_a_config_error(url):
    with pytest.raises(ConfigError):
        normalize_base_url(url)


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": []},
        {"max_tokens": 0},
        {"temperature": -0.1},
        {"top_p": 1.5},
        {"frequency_penalty": 3.0},
        {"model": ""},
        {"unknown_param": 1},
    ],
)
def test_chat_request_rejects_bad_values(bad):
    fields = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **bad}
    with pytest.raises(ValidationError):
        ChatRequest(**fields)


def test_vllm_helper_refuses_clearly_without_the_setup(tmp_path, monkeypatch):
    from pylon.devstack.vllm import VllmStartError, missing_reason, start_vllm

    monkeypatch.setenv("PYLON_PEERS_DIR", str(tmp_path))
    assert "setup_vllm.sh" in (missing_reason() or "")
    with pytest.raises(VllmStartError, match="setup_vllm.sh"):
        start_vllm()
