"""A swarm behind the gateway: embedded relay, a provider on a backend, the gateway on a free port.

The gateway runs in the test's event loop (GatewayServer) so its state can be inspected;
`tests/gateway/test_gateway_process.py` runs `pylon gateway` as a real process too. Sync
clients (the openai SDK, litellm, DSPy) must be called through `asyncio.to_thread` so this
loop keeps serving the relay, the provider and the gateway.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from pylon.customer.client import PylonClient
from pylon.gateway import Gateway, GatewayServer
from pylon.jobs.nip89 import discover
from pylon.nostr.keys import Keys
from pylon.provider.backends import OpenAIBackend
from pylon.provider.provider import Provider


class Stack:
    """`.base_url` (the gateway's /v1), `.relay_url`, `.provider`, `.gateway`, `.client`, `.model`."""

    def __init__(self, relay_url: str, provider: Provider, gateway: Gateway, server: GatewayServer,
                 client: PylonClient, model: str) -> None:
        self.relay_url, self.provider, self.gateway, self.server = relay_url, provider, gateway, server
        self.client, self.model = client, model
        self.base_url = server.base_url
        self.root_url = server.base_url.removesuffix("/v1")


@contextlib.asynccontextmanager
async def gateway_stack(relay_url: str, backend_url: str, tmp: Path, *, model: str, wallet: Any = None,
                        client_wallet: Any = None, api_key: str | None = None, timeout: float = 30.0,
                        provider_kwargs: dict[str, Any] | None = None, with_provider: bool = True,
                        max_msat: int | None = None) -> AsyncIterator[Stack]:
    backend = OpenAIBackend(backend_url)
    kwargs = dict(provider_kwargs or {})
    if wallet is None and "free" not in kwargs:
        kwargs["free"] = True
    provider = Provider([relay_url], backend, keys=Keys.generate(), models=[model], wallet=wallet,
                        db_path=tmp / "provider.sqlite", **kwargs)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if with_provider:
                await stack.enter_async_context(provider.running())
            client = await stack.enter_async_context(
                PylonClient([relay_url], keys=Keys.generate(), wallet=client_wallet, max_msat=max_msat))

            async def live() -> list[Any]:
                return await discover(client.pool, timeout=5.0)

            gateway = Gateway(client, discover=live, api_key=api_key, timeout=timeout)
            server = await stack.enter_async_context(GatewayServer(gateway, host="127.0.0.1", port=0))
            yield Stack(relay_url, provider, gateway, server, client, model)
    finally:
        await backend.aclose()


@pytest.fixture
async def double_stack(relay_url, openai_double, tmp_path) -> AsyncIterator[Stack]:
    """The gateway over a free provider on the OpenAI double (model `double-model`)."""
    async with gateway_stack(relay_url, openai_double.base_url, tmp_path, model="double-model") as stack:
        stack.double = openai_double  # type: ignore[attr-defined]
        yield stack


@pytest.fixture
async def vllm_stack(relay_url, vllm_server, tmp_path) -> AsyncIterator[Stack]:
    """The gateway over a free provider on the real CPU vLLM (tiny random model), tools announced."""
    async with gateway_stack(relay_url, vllm_server.base_url, tmp_path, model=vllm_server.model,
                             timeout=60.0, provider_kwargs={"tools": True}) as stack:
        yield stack
