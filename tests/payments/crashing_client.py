"""A customer process that dies between paying and recording (run by test_crashes.py).

It asks one job with a real PylonClient whose wallet really pays (the dev wallet) and then,
before `Budget.pay` can mark the receipt paid, prints PAID <payment hash> and blocks,
so the test can SIGKILL it at exactly that point. Usage:
    python -m tests.payments.crashing_client RELAY_URL LEDGER_PATH PROVIDER_HEX
(PYLON_HOME must be set: the receipts ledger lives there.)
"""

from __future__ import annotations

import asyncio
import sys

from pylon.customer.client import PylonClient
from wallet.dev import DevWallet


class PayThenHang:
    """The real dev wallet, except that after paying it never returns."""

    def __init__(self, inner: DevWallet) -> None:
        self.inner = inner
        self.network = inner.network

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def pay_invoice(self, bolt11: str, *, max_msat: int):
        payment = await self.inner.pay_invoice(bolt11, max_msat=max_msat)
        print(f"PAID {payment.payment_hash}", flush=True)
        await asyncio.Event().wait()


async def main(relay: str, ledger: str, provider: str) -> None:
    wallet = PayThenHang(DevWallet(ledger, "customer"))
    async with PylonClient([relay], wallet=wallet, max_msat=10_000) as client:
        await client.ask("crash after paying", provider=provider, timeout=120)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
