"""`backend_peer`: the same contract tests run against the real vLLM server and the double."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Peer:
    kind: str
    base_url: str
    model: str


@pytest.fixture(params=[pytest.param("vllm", marks=pytest.mark.vllm), "double"])
def backend_peer(request) -> Peer:
    """An OpenAI-compatible server to run a contract test against: the real CPU vLLM server
    (session-scoped) or the in-process double (with vLLM's 512-token context limit)."""
    if request.param == "vllm":
        server = request.getfixturevalue("vllm_server")
        return Peer("vllm", server.base_url, server.model)
    double = request.getfixturevalue("openai_double")
    double.max_context = 512
    return Peer("double", double.base_url, double.model)
