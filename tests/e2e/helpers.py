"""Shared helpers for the end-to-end job tests: a provider and a client on real relays."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

from pylon.provider.backends import OpenAIBackend
from pylon.customer.client import PylonClient
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.provider.provider import Provider
from pylon.relay.pool import RelayPool


@contextlib.asynccontextmanager
async def serving(relay_url: str, base_url: str, db_path: Path, *, keys: Keys | None = None,
                  **kwargs: Any) -> AsyncIterator[Provider]:
    """A real Provider on `relay_url` in front of the backend at `base_url`, started and announced."""
    backend = OpenAIBackend(base_url)
    provider = Provider([relay_url], backend, keys=keys or Keys.generate(), db_path=db_path, **kwargs)
    try:
        async with provider.running():
            yield provider
    finally:
        await backend.aclose()


@contextlib.asynccontextmanager
async def customer(relay_url: str, keys: Keys | None = None) -> AsyncIterator[PylonClient]:
    async with PylonClient([relay_url], keys=keys or Keys.generate()) as client:
        yield client


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until predicate() is true, checking on every loop turn (bounded by a timeout)."""
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def stored(relay_url: str, **filter_fields: Any) -> list[Event]:
    """Events the relay holds that match one filter (a separate observer connection)."""
    async with RelayPool([relay_url]) as pool:
        return await pool.query([Filter.of(**filter_fields)], timeout=5.0)


async def wait_stored(relay_url: str, count: int, timeout: float = 30.0, **filter_fields: Any) -> list[Event]:
    """Wait until the relay holds at least `count` events matching the filter."""
    async with RelayPool([relay_url]) as pool:
        async def loop() -> list[Event]:
            while True:
                events = await pool.query([Filter.of(**filter_fields)], timeout=5.0)
                if len(events) >= count:
                    return events
                await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"relay never held {count} events matching {filter_fields}") from None
