"""Fixtures for the dsrs_bridge tests: DSPy kept offline and isolated per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the chat double lives beside the tests

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def dspy_offline(monkeypatch, tmp_path):
    """DSPy would fetch a model price map from the internet and cache answers on disk:
    keep both local to the test."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    yield


@pytest.fixture
def chat_double():
    from chat_double import ChatDouble

    with ChatDouble() as server:
        yield server
