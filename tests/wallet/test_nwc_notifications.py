"""NIP-47 `payment_received`: our NWC service tells the connection that made an invoice when it
is paid, and our NWC client's `wait_invoice` wakes on it instead of asking lookup_invoice over
the relays; without the notification it still finds the payment by lookups. Real embedded
relay, real dev ledger."""

from __future__ import annotations

import asyncio
import hashlib
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest

import wallet.nwc_service as nwc_service
from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from wallet import InvoiceState, connect_wallet
from wallet.nwc import NwcWallet
from wallet.nwc_proto import INFO_KIND, NOTIFICATION_KIND, PAYMENT_RECEIVED, decrypt, info_notifications
from wallet.nwc_service import NwcService

pytestmark = [pytest.mark.embedded_relay, pytest.mark.timeout(90)]


@asynccontextmanager
async def _client(service: NwcService) -> AsyncIterator[NwcWallet]:
    client = await connect_wallet(service.uri_for(service.new_connection(name="shop")))
    assert isinstance(client, NwcWallet)
    try:
        yield client
    finally:
        await client.aclose()


def _lookups(service: NwcService) -> int:
    return int(service.stats["by_method"].get("lookup_invoice", 0))


async def test_a_paid_invoice_wakes_the_wait_without_a_lookup(relay_url, dev_ledger):
    dev_ledger.fund("payer", 50_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url])
    async with service.running(), _client(service) as client:
        async with RelayPool([relay_url]) as pool:  # announced in the info event's notifications tag
            (info,) = await pool.query([Filter.of(kinds=[INFO_KIND], authors=[service.pubkey])], timeout=5)
        assert PAYMENT_RECEIVED in info_notifications(info.tags) and "notifications" in info.content.split()
        assert PAYMENT_RECEIVED in client.notifications
        client.lookup_every_s = 60.0  # only the notification can end the wait below in time
        inv = await client.make_invoice(4_000, "job", 300)
        waiting = asyncio.create_task(client.wait_invoice(inv.payment_hash, 30))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await payer.pay_invoice(inv.bolt11, max_msat=4_000)
        assert await asyncio.wait_for(waiting, 40) == InvoiceState.SETTLED
        assert _lookups(service) == 0
        for _ in range(100):  # the service counts it once both twins (23197, 23196) are out
            if service.stats.get("notifications"):
                break
            await asyncio.sleep(0.02)
        assert service.stats["notifications"] == 1
        # a later wait for the same invoice answers from what the notification said
        assert await client.wait_invoice(inv.payment_hash, 5) == InvoiceState.SETTLED
        assert _lookups(service) == 0
        # an unpaid one times out PENDING; a short wait on an invoice made here asks nothing first
        unpaid = await client.make_invoice(1_000, "never paid", 300)
        assert await client.wait_invoice(unpaid.payment_hash, 0.2) == InvoiceState.PENDING


async def test_without_the_notification_the_wait_finds_the_payment_by_lookups(relay_url, dev_ledger):
    dev_ledger.fund("payer", 50_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url], send_notifications=False)  # as older services
    async with service.running(), _client(service) as client:
        assert PAYMENT_RECEIVED not in client.notifications
        inv = await client.make_invoice(3_000, "job", 300)
        waiting = asyncio.create_task(client.wait_invoice(inv.payment_hash, 30))
        await asyncio.sleep(0.2)
        await payer.pay_invoice(inv.bolt11, max_msat=3_000)
        assert await asyncio.wait_for(waiting, 40) == InvoiceState.SETTLED
        assert _lookups(service) >= 2  # polled, growing interval
        assert service.stats.get("notifications", 0) == 0


async def test_past_the_watch_limit_an_invoice_is_found_by_lookup(relay_url, dev_ledger, monkeypatch):
    monkeypatch.setattr(nwc_service, "MAX_WATCHED_INVOICES", 1)
    dev_ledger.fund("payer", 50_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url])
    async with service.running(), _client(service) as client:
        client.lookup_every_s = 60.0
        watched = await client.make_invoice(1_000, "watched", 300)
        unwatched = await client.make_invoice(2_000, "over the limit", 300)
        await payer.pay_invoice(unwatched.bolt11, max_msat=2_000)
        # no notification comes: the wait's lookup after its first slice finds it
        assert await client.wait_invoice(unwatched.payment_hash, 1.0) == InvoiceState.SETTLED
        assert _lookups(service) == 1
        await payer.pay_invoice(watched.bolt11, max_msat=1_000)
        assert await client.wait_invoice(watched.payment_hash, 30) == InvoiceState.SETTLED
        assert _lookups(service) == 1


async def test_a_hold_invoice_without_the_notification_is_found_by_quick_lookups(relay_url, dev_ledger):
    import hashlib
    import os

    dev_ledger.fund("payer", 50_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url], send_notifications=False)
    async with service.running(), _client(service) as client:
        assert await client.hold_invoices_offered() and not client.notifications
        preimage = os.urandom(32).hex()
        ph = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        inv = await client.make_hold_invoice(2_000, ph, "key", 300)
        paying = asyncio.create_task(payer.pay_invoice(inv.bolt11, max_msat=2_000))
        # lookups from 10 ms, growing: found well inside the 5 s a notified wait would sleep
        assert await client.wait_hold_invoice(ph, 4.0) == InvoiceState.ACCEPTED
        await client.settle_hold_invoice(preimage)
        assert (await asyncio.wait_for(paying, 20)).preimage == preimage
        assert service.stats.get("notifications", 0) == 0


async def test_a_settled_invoice_shows_its_preimage_and_settle_time(relay_url, dev_ledger):
    """NIP-47 lists `preimage` and `settled_at` in a settled incoming transaction, in
    `payment_received` and in `lookup_invoice`'s answer. The dev wallet shows both
    (SupportsReceivedDetails): the preimage hashes to the invoice's hash, the time is the settle's."""
    dev_ledger.fund("payer", 50_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url])
    async with service.running(), _client(service) as client:
        async with RelayPool([relay_url]) as watcher:
            sub = watcher.subscribe([Filter.of(kinds=[NOTIFICATION_KIND], authors=[service.pubkey],
                                               p=[client.keys.public_key])])
            await sub.open()
            await sub.wait_eose(5)
            inv = await client.make_invoice(4_000, "job", 300)
            before = int(time.time())
            payment = await payer.pay_invoice(inv.bolt11, max_msat=4_000)
            async with asyncio.timeout(10):
                event = await sub.__anext__()
        payload = decrypt(client.keys, service.pubkey, event.content)
        assert payload["notification_type"] == PAYMENT_RECEIVED
        note = payload["notification"]
        assert note["payment_hash"] == inv.payment_hash and note["state"] == "settled" and note["amount"] == 4_000
        assert note["preimage"] == payment.preimage
        assert hashlib.sha256(bytes.fromhex(note["preimage"])).hexdigest() == inv.payment_hash
        assert before - 1 <= note["settled_at"] <= int(time.time()) + 1
        looked = await client.request("lookup_invoice", {"payment_hash": inv.payment_hash})
        assert looked["preimage"] == payment.preimage and looked["settled_at"] == note["settled_at"]
        unpaid = await client.make_invoice(1_000, "never paid", 300)
        looked = await client.request("lookup_invoice", {"payment_hash": unpaid.payment_hash})
        assert looked["state"] == "pending" and "preimage" not in looked and "settled_at" not in looked


async def test_a_preimage_that_does_not_open_the_invoice_is_left_out(relay_url, dev_ledger, monkeypatch):
    """The service is where the guarantee lives: whatever its wallet says, a `preimage` it
    sends hashes to the invoice's payment hash. A double of a wallet that misreports it (over
    the real dev wallet): the lookup answers settled, with `settled_at` and no preimage."""
    from wallet.base import Received

    dev_ledger.fund("payer", 50_000)
    shop = dev_ledger.wallet("shop")
    service = NwcService(shop, [relay_url])
    real = shop.received_details

    async def misreported(payment_hash: str) -> Received | None:
        got = await real(payment_hash)
        return None if got is None else Received(got.payment_hash, "00" * 32, got.amount_msat, got.settled_at)

    monkeypatch.setattr(shop, "received_details", misreported)
    async with service.running(), _client(service) as client:
        inv = await client.make_invoice(2_000, "job", 300)
        await dev_ledger.wallet("payer").pay_invoice(inv.bolt11, max_msat=2_000)
        looked = await client.request("lookup_invoice", {"payment_hash": inv.payment_hash})
    assert looked["state"] == "settled" and "settled_at" in looked and "preimage" not in looked
