"""LLM backends: one client for every OpenAI-compatible server (vLLM, llama.cpp, Ollama, SGLang)."""

from pylon.provider.backends.errors import BackendProtocolError, BackendRejected, BackendUnavailable
from pylon.provider.backends.models import BackendHealth, ChatChunk, ChatRequest, ChatResult
from pylon.provider.backends.openai import OpenAIBackend, normalize_base_url
from pylon.errors import BackendError

__all__ = [
    "BackendError",
    "BackendHealth",
    "BackendProtocolError",
    "BackendRejected",
    "BackendUnavailable",
    "ChatChunk",
    "ChatRequest",
    "ChatResult",
    "OpenAIBackend",
    "normalize_base_url",
]
