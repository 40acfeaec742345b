"""A pay-first customer process that hangs right after its wallet paid (the fault suite SIGKILLs
it there). Like tests/payments/crashing_client.py, but `key_delivery=False`, so the provider is
paid BEFORE it runs the job (the case where a refund can be owed). Usage:
    python -m tests.faults.crash_after_paying RELAY_URL LEDGER_PATH PROVIDER_HEX
"""

from __future__ import annotations

import asyncio
import sys

from pylon.customer.client import PylonClient
from tests.payments.crashing_client import PayThenHang
from wallet.dev import DevWallet


async def main(relay: str, ledger: str, provider: str) -> None:
    wallet = PayThenHang(DevWallet(ledger, "customer"))
    async with PylonClient([relay], wallet=wallet, max_msat=10_000, key_delivery=False) as client:
        await client.ask("crash after paying", provider=provider, timeout=120)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
