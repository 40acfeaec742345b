"""Fixtures for the relay pool tests: the rust-nostr reference relay (nostr-sdk LocalRelay)."""

from __future__ import annotations

import contextlib

import nostr_sdk
import pytest


class SdkRelays:
    """Starts rust-nostr LocalRelays on 127.0.0.1 (rate limit raised) and shuts them down."""

    def __init__(self) -> None:
        self.running: list = []

    async def start(self, *, port: int | None = None, auth: bool = False) -> tuple[object, str]:
        builder = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").rate_limit(
            nostr_sdk.RateLimit(max_reqs=10_000, notes_per_minute=1_000_000)
        )
        if port is not None:
            builder = builder.port(port)
        if auth:
            builder = builder.nip42(nostr_sdk.LocalRelayBuilderNip42(mode=nostr_sdk.LocalRelayBuilderNip42Mode.BOTH))
        relay = builder.build()
        await relay.run()
        self.running.append(relay)
        return relay, str(await relay.url()).rstrip("/")

    def stop(self, relay) -> None:
        if relay in self.running:
            self.running.remove(relay)
            relay.shutdown()

    def stop_all(self) -> None:
        for relay in list(self.running):
            with contextlib.suppress(Exception):
                self.stop(relay)


@pytest.fixture
async def sdk_relays():
    relays = SdkRelays()
    try:
        yield relays
    finally:
        relays.stop_all()


@pytest.fixture
async def sdk_relay_url(sdk_relays):
    _, url = await sdk_relays.start()
    return url
