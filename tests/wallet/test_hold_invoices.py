"""Hold invoices (NIP-47 make/settle/cancel_hold_invoice, `hold_invoice_accepted`): the dev
ledger's lock/settle/cancel with real SQLite, and our NWC client against our NWC service over
a real embedded relay (nexus_relay), with the notification read off the relay."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from wallet import (
    AlreadyPaid,
    InvoiceNotFound,
    InvoiceState,
    NotImplementedByWallet,
    PaymentFailed,
    SupportsHoldInvoice,
    Unauthorized,
    connect_wallet,
)
from wallet.nwc_proto import HOLD_ACCEPTED, HOLD_METHODS, INFO_KIND, NOTIFICATION_KIND, info_notifications
from wallet.nwc_service import NwcService

pytestmark = pytest.mark.timeout(60)


def _key() -> tuple[str, str]:
    preimage = os.urandom(32).hex()
    return preimage, hashlib.sha256(bytes.fromhex(preimage)).hexdigest()


async def test_dev_hold_invoice_locks_then_settles(dev_ledger):
    dev_ledger.fund("payer", 10_000)
    payer, payee = dev_ledger.wallet("payer"), dev_ledger.wallet("payee")
    assert isinstance(payee, SupportsHoldInvoice) and await payee.hold_invoices_offered()
    preimage, ph = _key()
    inv = await payee.make_hold_invoice(3_000, ph, "held", 60)
    assert inv.payment_hash == ph and await payee.lookup_invoice(ph) == InvoiceState.PENDING
    paying = asyncio.create_task(payer.pay_invoice(inv.bolt11, max_msat=3_000))
    assert await payee.wait_hold_invoice(ph, 10) == InvoiceState.ACCEPTED
    # locked: gone from the payer, not yet the payee's; the payer's payment is in flight
    assert await payer.balance() == 7_000 and await payee.balance() == 0
    assert await payer.lookup_payment(ph) == InvoiceState.PENDING and not paying.done()
    assert await payee.received_details(ph) is None  # locked, not settled: the ledger has no preimage yet
    with pytest.raises(AlreadyPaid):  # a second payment cannot lock it again
        await dev_ledger.wallet("payer2").pay_invoice(inv.bolt11, max_msat=3_000)
    await payee.settle_hold_invoice(preimage)
    payment = await asyncio.wait_for(paying, 10)
    assert payment.preimage == preimage and payment.preimage_matches()
    assert await payee.balance() == 3_000 and await payer.balance() == 7_000
    assert await payee.lookup_invoice(ph) == InvoiceState.SETTLED
    assert await payer.lookup_payment(ph) == InvoiceState.SETTLED
    assert (await payee.received_details(ph)).preimage == preimage  # known from the settle
    await payee.settle_hold_invoice(preimage)  # idempotent
    with pytest.raises(AlreadyPaid):
        await payee.cancel_hold_invoice(ph)
    assert await payee.balance() == 3_000


async def test_dev_hold_invoice_cancelled_refunds_the_payer(dev_ledger):
    dev_ledger.fund("payer", 10_000)
    payer, payee = dev_ledger.wallet("payer"), dev_ledger.wallet("payee")
    preimage, ph = _key()
    inv = await payee.make_hold_invoice(4_000, ph, "held", 60)
    paying = asyncio.create_task(payer.pay_invoice(inv.bolt11, max_msat=4_000))
    assert await payee.wait_hold_invoice(ph, 10) == InvoiceState.ACCEPTED
    assert await payer.balance() == 6_000
    await payee.cancel_hold_invoice(ph)
    with pytest.raises(PaymentFailed, match="cancelled"):
        await asyncio.wait_for(paying, 10)
    assert await payer.balance() == 10_000 and await payee.balance() == 0
    assert await payee.lookup_invoice(ph) == InvoiceState.FAILED
    assert await payer.lookup_payment(ph) == InvoiceState.FAILED
    with pytest.raises(PaymentFailed):  # nothing left to settle, and the preimage never leaked to anyone
        await payee.settle_hold_invoice(preimage)
    with pytest.raises(PaymentFailed, match="cancelled"):  # and it cannot be paid again
        await payer.pay_invoice(inv.bolt11, max_msat=4_000)
    # an unpaid hold invoice cancelled: unpayable, nothing moved
    _, ph2 = _key()
    inv2 = await payee.make_hold_invoice(1_000, ph2, "never", 60)
    await payee.cancel_hold_invoice(ph2)
    with pytest.raises(PaymentFailed):
        await payer.pay_invoice(inv2.bolt11, max_msat=1_000)
    assert await payer.balance() == 10_000


async def test_dev_hold_not_settled_in_time_goes_back_to_the_payer(dev_ledger):
    dev_ledger.fund("payer", 5_000)
    payer, payee = dev_ledger.wallet("payer"), dev_ledger.wallet("payee")
    payer.ledger.hold_settle_s = 0.3  # the payer's side stamps the deadline when it locks
    preimage, ph = _key()
    inv = await payee.make_hold_invoice(2_000, ph, "slow payee", 60)
    with pytest.raises(PaymentFailed, match="in time"):
        await asyncio.wait_for(payer.pay_invoice(inv.bolt11, max_msat=2_000), 10)
    assert await payer.balance() == 5_000
    with pytest.raises(PaymentFailed):
        await payee.settle_hold_invoice(preimage)
    assert await payee.balance() == 0


async def test_dev_hold_invoice_only_by_its_issuer(dev_ledger):
    payee, other = dev_ledger.wallet("payee"), dev_ledger.wallet("other")
    preimage, ph = _key()
    await payee.make_hold_invoice(1_000, ph, "mine", 60)
    with pytest.raises(InvoiceNotFound):
        await other.cancel_hold_invoice(ph)
    with pytest.raises(InvoiceNotFound):
        await other.settle_hold_invoice(preimage)
    with pytest.raises(Exception, match="already issued"):
        await payee.make_hold_invoice(1_000, ph, "twice", 60)


@pytest.mark.embedded_relay
async def test_nwc_hold_invoice_round_trip_with_the_accepted_notification(relay_url, dev_ledger):
    dev_ledger.fund("payer", 20_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url])
    conn, intruder = service.new_connection(name="provider"), service.new_connection(name="other app")
    async with service.running():
        async with RelayPool([relay_url]) as pool:  # announced: methods, and the notification in its own tag
            (info,) = await pool.query([Filter.of(kinds=[INFO_KIND], authors=[service.pubkey])], timeout=5)
        assert set(HOLD_METHODS) <= set(info.content.split()) and HOLD_ACCEPTED in info_notifications(info.tags)
        client = await connect_wallet(service.uri_for(conn))
        other = await connect_wallet(service.uri_for(intruder))
        try:
            assert isinstance(client, SupportsHoldInvoice) and await client.hold_invoices_offered()
            assert HOLD_ACCEPTED in client.notifications
            client.lookup_every_s = 60.0  # only the notification can wake the wait below in time
            preimage, ph = _key()
            inv = await client.make_hold_invoice(5_000, ph, "pay for the key", 120)
            assert inv.payment_hash == ph and inv.amount_msat == 5_000
            assert await client.wait_hold_invoice(ph, 0.2) == InvoiceState.PENDING
            # a bystander subscribed to the service's notifications (ephemeral: relays do not keep them)
            watcher = RelayPool([relay_url])
            await watcher.__aenter__()
            sub = watcher.subscribe([Filter.of(kinds=[NOTIFICATION_KIND, 23196], authors=[service.pubkey])])
            await sub.open()
            await sub.wait_eose(5)
            paying = asyncio.create_task(payer.pay_invoice(inv.bolt11, max_msat=5_000))
            assert await client.wait_hold_invoice(ph, 30) == InvoiceState.ACCEPTED
            assert await client.lookup_invoice(ph) == InvoiceState.ACCEPTED
            with pytest.raises(Unauthorized):  # another connection of the same service cannot take it
                await other.settle_hold_invoice(preimage)
            assert not paying.done()
            await client.settle_hold_invoice(preimage)
            assert (await asyncio.wait_for(paying, 10)).preimage == preimage
            assert await client.lookup_invoice(ph) == InvoiceState.SETTLED
            assert await client.balance() == 5_000
            # the notification went out NIP-44 (23197) and as its NIP-04 twin (23196), to our key only
            notes = []
            async with asyncio.timeout(10):
                async for event in sub:
                    notes.append(event)
                    if len(notes) == 2:
                        break
            await watcher.close()
            assert sorted(e.kind for e in notes) == [23196, 23197]
            assert all(e.tags == [["p", client.keys.public_key]] for e in notes)
            # cancel over NWC: the payer gets its money back
            _, ph2 = _key()
            inv2 = await client.make_hold_invoice(3_000, ph2, "cancel me", 120)
            paying = asyncio.create_task(payer.pay_invoice(inv2.bolt11, max_msat=3_000))
            assert await client.wait_hold_invoice(ph2, 30) == InvoiceState.ACCEPTED
            await client.cancel_hold_invoice(ph2)
            with pytest.raises(PaymentFailed):
                await asyncio.wait_for(paying, 10)
            assert await payer.balance() == 15_000 and await client.balance() == 5_000
            assert await client.lookup_invoice(ph2) == InvoiceState.FAILED
        finally:
            await client.aclose()
            await other.aclose()


@pytest.mark.embedded_relay
async def test_nwc_without_hold_invoices_says_so(relay_url, dev_ledger):
    """A service over a wallet without hold invoices lists none, and the client refuses to try."""
    from tests.wallet.test_capabilities import BareWalletDouble

    service = NwcService(BareWalletDouble(dev_ledger.wallet("shop")), [relay_url])
    conn = service.new_connection()
    async with service.running():
        client = await connect_wallet(service.uri_for(conn))
        try:
            assert not await client.hold_invoices_offered()
            with pytest.raises(NotImplementedByWallet):
                await client.make_hold_invoice(1_000, _key()[1])
        finally:
            await client.aclose()


async def test_nwc_wait_for_a_hold_invoice_made_here_costs_no_lookup(relay_url, dev_ledger):
    """Issue 15: a hold invoice this client made while reading the notifications is waited for
    on the notification alone (no lookup_invoice round trip); a client that did not make it
    (a restart) still asks at the start, and finds a payment locked before it subscribed."""
    dev_ledger.fund("payer", 20_000)
    payer = dev_ledger.wallet("payer")
    service = NwcService(dev_ledger.wallet("shop"), [relay_url])
    conn = service.new_connection(name="provider")
    async with service.running():
        client = await connect_wallet(service.uri_for(conn))
        restarted = None
        try:
            client.lookup_every_s = 60.0
            preimage, ph = _key()
            inv = await client.make_hold_invoice(5_000, ph, "pay for the key", 120)
            before = service.stats["requests"]
            paying = asyncio.create_task(payer.pay_invoice(inv.bolt11, max_msat=5_000))
            assert await client.wait_hold_invoice(ph, 30) == InvoiceState.ACCEPTED
            assert service.stats["requests"] == before  # woken by hold_invoice_accepted, nothing asked
            restarted = await connect_wallet(service.uri_for(conn))  # subscribed after the notification
            restarted.lookup_every_s = 60.0
            assert await restarted.wait_hold_invoice(ph, 30) == InvoiceState.ACCEPTED  # its lookup found it
            assert service.stats["requests"] > before
            await restarted.settle_hold_invoice(preimage)
            assert (await asyncio.wait_for(paying, 10)).preimage == preimage
        finally:
            await client.aclose()
            if restarted is not None:
                await restarted.aclose()
