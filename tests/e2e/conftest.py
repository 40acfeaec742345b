"""Fixtures for the end-to-end job tests."""

from __future__ import annotations

import pytest


@pytest.fixture
async def sdk_relay_url():
    """ws:// URL of the rust-nostr reference relay (nostr-sdk LocalRelay) on 127.0.0.1, rate
    limit raised so a burst of jobs is not throttled; shut down after the test."""
    import nostr_sdk

    relay = (nostr_sdk.LocalRelayBuilder().addr("127.0.0.1")
             .rate_limit(nostr_sdk.RateLimit(max_reqs=10_000, notes_per_minute=1_000_000)).build())
    await relay.run()
    try:
        yield str(await relay.url()).rstrip("/")
    finally:
        relay.shutdown()
