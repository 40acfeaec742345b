"""Helpers for the paid-job tests: a priced provider and a paying customer on a real relay,
with real dev-wallet accounts in one SQLite ledger (tests/conftest.py `dev_ledger`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, AsyncIterator

from pylon.customer.client import PylonClient
from pylon.provider.jobstore import JobStore
from pylon.customer.ledger import Ledger
from pylon.jobs.nip90 import JobFeedback, JobParseError, JobRequest
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import serving, wait_for

__all__ = ["paid_provider", "paying_customer", "ScriptedProvider", "wait_for", "job_row"]


@contextlib.asynccontextmanager
async def paid_provider(relay_url: str, base_url: str, db_path: Path, wallet: Any, *, price_msat: int = 0,
                        price_per_1k_tokens_msat: int = 0, **kwargs: Any) -> AsyncIterator[Any]:
    """A real Provider charging for jobs, invoicing with `wallet`."""
    async with serving(relay_url, base_url, db_path, wallet=wallet, free=False, price_msat=price_msat,
                       price_per_1k_tokens_msat=price_per_1k_tokens_msat, **kwargs) as provider:
        yield provider


@contextlib.asynccontextmanager
async def paying_customer(relay_url: str, wallet: Any, *, keys: Keys | None = None, ledger_path: Path | None = None,
                          **kwargs: Any) -> AsyncIterator[PylonClient]:
    """A PylonClient paying with `wallet`; receipts in `ledger_path` (else PYLON_HOME's ledger).

    These tests are about the pay-first flow (payment-required, then the job runs), so the
    client does not ask for pay-for-the-key delivery unless `key_delivery=True` is given
    (tests/market/test_key_delivery.py)."""
    kwargs.setdefault("key_delivery", False)
    ledger = Ledger(ledger_path) if ledger_path is not None else None
    client = PylonClient([relay_url], keys=keys or Keys.generate(), wallet=wallet, ledger=ledger, **kwargs)
    try:
        async with client:
            yield client
    finally:
        if ledger is not None:
            ledger.close()


def job_row(db_path: Path, job_id: str):
    with JobStore(db_path) as store:
        return store.get(job_id)


class ScriptedProvider:
    """A provider that lies on purpose: real keys, real relay, real invoices from its own dev
    wallet, and whatever feedback the test scripts (`on_request(req)` coroutine)."""

    def __init__(self, relay_url: str, wallet: Any, keys: Keys | None = None) -> None:
        self.relay_url = relay_url
        self.wallet = wallet
        self.keys = keys or Keys.generate()
        self.pool: RelayPool | None = None
        self.requests: list[JobRequest] = []
        self._task: asyncio.Task | None = None

    @property
    def pubkey(self) -> str:
        return self.keys.public_key

    async def __aenter__(self) -> "ScriptedProvider":
        self.pool = RelayPool([self.relay_url], keys=self.keys)
        await self.pool.__aenter__()
        # only requests from now on, and only ours to read: on a shared relay (PYLON_TEST_RELAY)
        # earlier tests' requests are still there
        self._sub = self.pool.subscribe([Filter.of(kinds=[5050], since=int(time.time()) - 1)])
        await self._sub.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._sub.close()
        assert self.pool is not None
        await self.pool.close()

    def serve(self, on_request) -> None:
        async def loop() -> None:
            while True:
                event = await self._sub.next()
                try:
                    req = JobRequest.from_event(event, self.keys)
                except JobParseError:  # encrypted to another provider
                    continue
                self.requests.append(req)
                await on_request(req)
        self._task = asyncio.create_task(loop())

    async def announce(self, **kwargs: Any) -> None:
        """Publish a live NIP-89 announcement (kind 31990, 5-minute NIP-40 expiry), as a real
        provider does: clients count it as somebody who could take a job (pylon.customer.live)."""
        from pylon.jobs.nip89 import build_announcement

        assert self.pool is not None
        kwargs.setdefault("models", [])
        await self.pool.publish(build_announcement(self.keys, expires_in_s=300, **kwargs))

    async def feedback(self, req: JobRequest, status: str, **kwargs: Any) -> None:
        assert self.pool is not None
        await self.pool.publish(JobFeedback.build(self.keys, req, status, **kwargs))

    async def result(self, req: JobRequest, text: str, **kwargs: Any) -> None:
        from pylon.jobs.nip90 import JobResult

        assert self.pool is not None
        await self.pool.publish(JobResult.build(self.keys, req, text, **kwargs))
