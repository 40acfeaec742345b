"""Waiting for an invoice we issued to settle, with whatever the wallet can do: its own
`wait_invoice` where it has one (the dev wallet's watcher, NWC's `payment_received`
notification), else `lookup_invoice` polls that thin out (10 ms, x1.5, up to 1 s).

One helper for every waiter: the provider's payment step and its key sales, and the NWC
service watching the invoices it issued so it can send `payment_received`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from wallet.base import InvoiceState, SupportsWaitInvoice, Wallet, implements

log = logging.getLogger("wallet.waiting")

POLL_FIRST_S = 0.01  # a dev-wallet payment lands ~10-20 ms after the quote; polls thin out fast
POLL_MAX_S = 1.0
POLL_GROWTH = 1.5
WAIT_SLICE_S = 30.0  # a wallet with wait_invoice is re-asked at least this often (logs, cancellation)
EXPIRY_GRACE_S = 60.0  # a wallet that has not said "expired" this long after expiry: treated as expired


async def wait_for_invoice(wallet: Wallet, payment_hash: str, expires_at: int, *, label: str,
                           poll_first_s: float = POLL_FIRST_S, poll_max_s: float = POLL_MAX_S) -> InvoiceState | None:
    """Wait for an invoice we issued to settle: SETTLED, EXPIRED or FAILED as the wallet says,
    or None when it still has no answer (errors, or still pending) `EXPIRY_GRACE_S` after the
    invoice's expiry. `wait_invoice` where the wallet has it, else polls that thin out. A
    wallet error is logged and retried (the money may still arrive)."""
    delay = poll_first_s
    waits = implements(wallet, SupportsWaitInvoice)  # event-driven wallets (dev): no polling
    while True:
        left = expires_at - time.time()
        state: InvoiceState | None
        try:
            if waits and left > 0:
                state = await cast(SupportsWaitInvoice, wallet).wait_invoice(payment_hash, timeout=min(left + 0.05, WAIT_SLICE_S))
            else:
                state = await wallet.lookup_invoice(payment_hash)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: invoice lookup failed (%s); retrying", label, type(exc).__name__)
            state = None
        if state in (InvoiceState.SETTLED, InvoiceState.EXPIRED, InvoiceState.FAILED):
            return state
        if time.time() > expires_at + EXPIRY_GRACE_S:
            return None
        if waits and state is not None and state != InvoiceState.ACCEPTED and left > 0:
            continue  # it already waited (up to its slice); a locked hold invoice (ACCEPTED) is polled
        left = expires_at - time.time()
        await asyncio.sleep(min(delay, max(left, 0.0) + 0.05) if left > 0 else delay)
        delay = min(delay * POLL_GROWTH, poll_max_s)
