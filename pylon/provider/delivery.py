"""Delivery until acknowledged (docs/PROTOCOL.md): what the provider owes a customer (a result,
a `payment-required` quote, a refund offer) is published again with backoff until a relay
accepts it, across reconnects, instead of being dropped on the first refusal.

One loop for the three of them, so the backoff (0.5 s doubling to `MAX_DELAY_S`) and the log
line are the same everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from pylon.errors import RelayError

log = logging.getLogger("pylon.provider")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


async def until_accepted(send: Callable[[], Awaitable[object]], what: str, *, give_up_at: float | None = None,
                         level: int = logging.WARNING) -> bool:
    """Call `send` until it does not raise RelayError; True once accepted, False when the next
    try would come after `give_up_at` (a wall-clock time; None: keep trying until cancelled)."""
    delay = FIRST_DELAY_S
    while True:
        try:
            await send()
            return True
        except RelayError as exc:
            log.log(level, "%s not accepted yet (%s); retrying in %.1f s", what, exc, delay)
        if give_up_at is not None and time.time() + delay >= give_up_at:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)
