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
    # a pylon_lm a test did not close keeps its loop thread, and its relay pool reconnecting to
    # the test's stopped relay (with random jitter) for the rest of the run
    from dsrs_bridge.hub import close_all_hubs

    close_all_hubs()


@pytest.fixture
def chat_double():
    from chat_double import ChatDouble

    with ChatDouble() as server:
        yield server


class Swarm:
    """A relay, a provider on an OpenAI-compatible double, and the provider's pubkey."""

    def __init__(self, relay, provider, double, keys):
        self.relay = relay
        self.relay_url = relay.url
        self.provider = provider
        self.double = double
        self.provider_pubkey = keys.public_key
        self.model = "double-model"


@pytest.fixture
async def swarm(openai_double, tmp_path):
    """A free provider serving the shared OpenAI double (ChatAdapter-shaped replies) on an
    embedded relay (its stats count connections). Run sync DSPy code with asyncio.to_thread
    so this loop keeps serving the relay and the provider."""
    from chat_double import chat_adapter_reply
    from nexus_relay import running_relay
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.nostr.keys import Keys
    from pylon.provider.provider import Provider

    openai_double.reply = lambda body: (
        chat_adapter_reply(body.get("messages", [])) if not body.get("response_format")
        else __import__("tests.peers.openai_double", fromlist=["default_reply"]).default_reply(body))
    keys = Keys.generate()
    backend = OpenAIBackend(openai_double.base_url)
    async with running_relay(tmp_path / "relay.sqlite") as relay:
        provider = Provider([relay.url], backend, keys=keys, models=["double-model"], free=True,
                            db_path=tmp_path / "provider.sqlite")
        async with provider.running():
            yield Swarm(relay, provider, openai_double, keys)
    await backend.aclose()


@pytest.fixture
async def priced(swarm, dev_ledger, tmp_path):
    """A second provider on the same relay and double that charges `price_msat` per job
    (1,000 unless changed before first use), paid into the dev ledger's "provider" account;
    the customer account is funded with 100,000 msat. Yields a factory: `await priced(1000)`."""
    from contextlib import AsyncExitStack

    from pylon.nostr.keys import Keys
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.provider.provider import Provider

    dev_ledger.fund("customer", 100_000)
    stack = AsyncExitStack()
    backend = OpenAIBackend(swarm.double.base_url)

    async def start(price_msat: int = 1_000, model: str = "double-model") -> Provider:
        provider = Provider([swarm.relay_url], backend, keys=Keys.generate(), models=[model],  # priced: not free
                            price_msat=price_msat, wallet=dev_ledger.wallet("provider"),
                            db_path=tmp_path / f"priced-{price_msat}.sqlite")
        await stack.enter_async_context(provider.running())
        return provider

    async with stack:
        yield start
    await backend.aclose()
