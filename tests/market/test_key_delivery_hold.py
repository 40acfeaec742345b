"""Pay for the key with hold invoices (issue 10, rule 3, beyond the dev wallet): the provider's
wallet is an NWC connection to a real `pylon wallet serve-nwc` process (over a dev ledger
account) on the real embedded relay, so the key is sold with NIP-47 make_hold_invoice for
sha256(P), the `hold_invoice_accepted` notification and settle_hold_invoice(P). The customer
pays with the dev wallet or through NWC. Paths: happy, never paid (the hold is cancelled, the
payer is not charged), and the provider restarted between the payment being locked and settled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest

from pylon.jobs.keyed import KEY_MODE, key_hash
from pylon.jobs.nip89 import discover
from pylon.nostr.keys import Keys
from pylon.provider.jobstore import JobStore
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import wait_for
from tests.payments.helpers import paid_provider, paying_customer
from wallet import InsufficientBalance, InvoiceState, Payment, connect_wallet
from wallet.dev import DevWallet

pytestmark = [pytest.mark.timeout(180), pytest.mark.embedded_relay]
REPO = Path(__file__).resolve().parents[2]
FUNDS = 50_000
PRICE = 2_000


@contextlib.asynccontextmanager
async def serve_nwc(relay_url: str, wallet_uri: str, home: Path) -> AsyncIterator[str]:
    """`pylon wallet serve-nwc` as a real process; yields the connection URI it prints."""
    env = dict(os.environ, PYLON_HOME=str(home))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "wallet", "serve-nwc", "--wallet", wallet_uri, "--relay", relay_url,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert line.startswith("nostr+walletconnect://"), (line, await proc.stderr.read(2000))
        yield line
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 20)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _hold_row(ledger_path: Path, payment_hash: str) -> tuple[int, str]:
    """(hold, state) of an invoice in the dev ledger, read straight from its SQLite file."""
    with contextlib.closing(sqlite3.connect(ledger_path)) as db:
        return db.execute("SELECT hold, state FROM invoices WHERE payment_hash = ?", (payment_hash,)).fetchone()


def _key_hold(db_path: Path, request_id: str) -> tuple[str, str | None]:
    """(state, preimage) of the provider's record of a hold invoice, read from its job store file."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return db.execute("SELECT state, preimage FROM key_holds WHERE request_id = ?", (request_id,)).fetchone()


@contextlib.asynccontextmanager
async def customer_wallet(kind: str, dev_ledger, relay_url: str) -> AsyncIterator[object]:
    """The customer's wallet: its dev account directly, or through an NWC service over it."""
    if kind == "dev":
        yield dev_ledger.wallet("customer")
        return
    from wallet.nwc_service import NwcService

    service = NwcService(dev_ledger.wallet("customer"), [relay_url])
    conn = service.new_connection(name="pylon ask")
    async with service.running():
        w = await connect_wallet(service.uri_for(conn))
        try:
            yield w
        finally:
            await w.aclose()


@pytest.mark.parametrize("payer", ["dev", "nwc"])
async def test_pay_for_the_key_with_a_hold_invoice_over_serve_nwc(relay_url, openai_double, dev_ledger, tmp_path,
                                                                   pylon_home, payer):
    dev_ledger.fund("customer", FUNDS)
    async with serve_nwc(relay_url, dev_ledger.uri("provider"), pylon_home) as uri:
        pw = await connect_wallet(uri)
        try:
            async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw,
                                     price_msat=PRICE) as provider:
                assert provider.key_sales is not None and provider.key_sales.kind == "hold"
                async with RelayPool([relay_url]) as pool:
                    (info,) = [p for p in await discover(pool) if p.pubkey == provider.pubkey]
                assert info.delivery == [KEY_MODE]  # announced: the NWC wallet lists hold invoices
                async with customer_wallet(payer, dev_ledger, relay_url) as cw:
                    async with paying_customer(relay_url, cw, key_delivery=True, max_msat=5_000) as client:
                        outcome = await client.ask("hold it", provider=provider.pubkey, timeout=60)
                await wait_for(lambda: provider.store.get(outcome.job_id).paid_at is not None, 20, "the sale recorded")
                assert _key_hold(tmp_path / "p.sqlite", outcome.job_id)[0] == "settled"
        finally:
            await pw.aclose()
    assert outcome.delivery == KEY_MODE and outcome.text.endswith("hold it") and outcome.paid_msat == PRICE
    receipt = outcome.receipt
    assert receipt is not None and key_hash(receipt["preimage"]) == receipt["payment_hash"]
    assert _hold_row(dev_ledger.path, receipt["payment_hash"]) == (1, "settled")  # it really was a hold invoice
    assert dev_ledger.wallet("customer").ledger.balance("customer") == FUNDS - PRICE
    assert dev_ledger.wallet("provider").ledger.balance("provider") == PRICE


async def test_a_hold_invoice_never_paid_is_cancelled_and_charges_nothing(relay_url, openai_double, dev_ledger,
                                                                          tmp_path, pylon_home):
    """The customer cannot pay (its balance is short): the sealed result is out, the hold invoice
    expires unpaid, the provider cancels it, and nobody's balance moved."""
    dev_ledger.fund("customer", 500)
    async with serve_nwc(relay_url, dev_ledger.uri("provider"), pylon_home) as uri:
        pw = await connect_wallet(uri)
        try:
            async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw,
                                     price_msat=PRICE, invoice_expiry_s=8) as provider:
                async with paying_customer(relay_url, dev_ledger.wallet("customer"), key_delivery=True,
                                           max_msat=5_000) as client:
                    with pytest.raises(InsufficientBalance):
                        await client.ask("too poor", provider=provider.pubkey, timeout=30)
                (row,) = provider.store.jobs_in(("done",))
                assert row.payment_hash and _hold_row(dev_ledger.path, row.payment_hash)[1] == "pending"
                await wait_for(lambda: _key_hold(tmp_path / "p.sqlite", row.request_id)[0] == "cancelled", 30,
                               "the unpaid hold invoice cancelled")
                assert _key_hold(tmp_path / "p.sqlite", row.request_id)[1] is None  # the key is forgotten
                assert await pw.lookup_invoice(row.payment_hash) == InvoiceState.FAILED
                assert provider.store.get(row.request_id).paid_at is None
        finally:
            await pw.aclose()
    assert _hold_row(dev_ledger.path, row.payment_hash) == (1, "cancelled")
    assert dev_ledger.wallet("customer").ledger.balance("customer") == 500
    assert dev_ledger.wallet("provider").ledger.balance("provider") == 0


class GatedDevWallet(DevWallet):
    """The customer's real dev wallet, whose payment waits for the test to open a gate (so the
    provider can be stopped between publishing the sealed result and the payment being locked)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()

    async def pay_invoice(self, bolt11: str, *, max_msat: int) -> Payment:
        self.asked.set()
        await self.gate.wait()
        return await super().pay_invoice(bolt11, max_msat=max_msat)


async def test_provider_restarted_between_locked_and_settled_still_settles(relay_url, openai_double, dev_ledger,
                                                                           tmp_path, pylon_home):
    """The provider stops after publishing the sealed result; the customer's payment is then
    locked (accepted) while no provider runs. The restarted provider finds the open hold in its
    job store and settles it with the stored key: the customer gets the key, the provider the money."""
    dev_ledger.fund("customer", FUNDS)
    cw = GatedDevWallet(dev_ledger.path, "customer")
    keys, db = Keys.generate(), tmp_path / "p.sqlite"
    try:
        async with serve_nwc(relay_url, dev_ledger.uri("provider"), pylon_home) as uri:
            async with paying_customer(relay_url, cw, key_delivery=True, max_msat=5_000) as client:
                pw = await connect_wallet(uri)
                first = paid_provider(relay_url, openai_double.base_url, db, pw, price_msat=PRICE, keys=keys)
                provider = await first.__aenter__()
                try:
                    ask = asyncio.create_task(client.ask("survive a restart", provider=provider.pubkey, timeout=90))
                    await asyncio.wait_for(cw.asked.wait(), 60)  # the sealed result is out; the invoice in hand
                finally:
                    await first.__aexit__(None, None, None)  # the provider stops
                    await pw.aclose()
                # the job is `done`, or still `processing` with its signed result stored when the stop
                # came between the relay's echo and its OK (the restart republishes it): either way
                # its hold invoice, with P, was recorded before the result went out
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    (job_id, payment_hash), = conn.execute("SELECT request_id, payment_hash FROM key_holds").fetchall()
                with JobStore(db) as store:
                    row = store.get(job_id)
                assert row.payment_hash == payment_hash and row.result_json and row.paid_at is None
                cw.gate.set()  # now the customer pays: the money is locked, nobody settles it
                await wait_for(lambda: _hold_row(dev_ledger.path, row.payment_hash)[1] == "accepted", 30,
                               "the payment locked")
                assert dev_ledger.wallet("provider").ledger.balance("provider") == 0
                assert dev_ledger.wallet("customer").ledger.balance("customer") == FUNDS - PRICE  # held
                assert not ask.done()
                pw2 = await connect_wallet(uri)
                try:  # the restart: same identity, same job store
                    async with paid_provider(relay_url, openai_double.base_url, db, pw2, price_msat=PRICE,
                                             keys=keys) as again:
                        outcome = await asyncio.wait_for(ask, 60)
                        await wait_for(lambda: again.store.get(row.request_id).paid_at is not None, 20,
                                       "the sale recorded after the restart")
                finally:
                    await pw2.aclose()
    finally:
        await cw.aclose()
    assert outcome.job_id == row.request_id and outcome.text.endswith("survive a restart")
    assert outcome.paid_msat == PRICE and _hold_row(dev_ledger.path, row.payment_hash) == (1, "settled")
    assert _key_hold(db, row.request_id)[0] == "settled"
    assert dev_ledger.wallet("provider").ledger.balance("provider") == PRICE
    assert dev_ledger.wallet("customer").ledger.balance("customer") == FUNDS - PRICE
