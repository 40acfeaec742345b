"""NIP-47: our NWC client against our NWC service over a real embedded relay (nexus_relay)."""

from __future__ import annotations

import asyncio

import pytest

from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from wallet import (
    InsufficientBalance,
    InvoiceNotFound,
    InvoiceState,
    QuotaExceeded,
    Unauthorized,
    WalletTimeout,
    connect_wallet,
    open_wallet,
    redact_uri,
)
from wallet.nwc import NwcWallet
from wallet.nwc_proto import NIP04, NIP44, ConnectionUri
from wallet.nwc_service import NwcService

pytestmark = pytest.mark.embedded_relay


@pytest.fixture
async def nwc_setup(relay_url, dev_ledger):
    """A service over dev account 'svc' (funded 100 sat) with a 30 sat budget per connection."""
    dev_ledger.fund("svc", 100_000)
    service = NwcService(dev_ledger.wallet("svc"), [relay_url], budget_msat=30_000)
    conn = service.new_connection(name="test")
    async with service.running():
        yield service, conn, dev_ledger


async def test_round_trip_pay_invoice_lookup_balance(nwc_setup):
    service, conn, ledger = nwc_setup
    shop = ledger.wallet("shop")
    uri = service.uri_for(conn)
    assert uri.startswith("nostr+walletconnect://" + service.pubkey)
    client = await connect_wallet(uri)
    try:
        assert isinstance(client, NwcWallet)
        assert client.network == "regtest" and client.encryption == NIP44
        assert {"pay_invoice", "get_balance"} <= client.methods
        assert await client.balance() == 100_000
        inv = await shop.make_invoice(12_000, "job 1")
        pay = await client.pay_invoice(inv.bolt11, max_msat=12_000)
        assert pay.preimage_matches() and pay.fee_msat == 0
        assert await shop.lookup_invoice(inv.payment_hash) == InvoiceState.SETTLED
        assert await client.lookup_payment(inv.payment_hash) == InvoiceState.SETTLED
        assert (await client.payment_details(inv.payment_hash)).preimage == pay.preimage
        assert await client.balance() == 88_000 and await shop.balance() == 12_000
        # the service's own invoices
        mine = await client.make_invoice(5_000, "top-up")
        assert await client.lookup_invoice(mine.payment_hash) == InvoiceState.PENDING
        await ledger.wallet("payer2").fund(5_000)
        await ledger.wallet("payer2").pay_invoice(mine.bolt11, max_msat=5_000)
        assert await client.lookup_invoice(mine.payment_hash) == InvoiceState.SETTLED
        with pytest.raises(InvoiceNotFound):
            await client.lookup_invoice("ab" * 32)
        assert await client.lookup_payment("ab" * 32) == InvoiceState.FAILED
        # concurrent requests are matched to their own responses
        balances = await asyncio.gather(*(client.balance() for _ in range(5)))
        assert balances == [93_000] * 5
        assert conn.spent_msat == 12_000
    finally:
        await client.aclose()


async def test_budget_exceeded_is_quota_exceeded_and_nothing_moves(nwc_setup):
    service, conn, ledger = nwc_setup
    shop = ledger.wallet("shop")
    async with NwcWallet.from_uri(service.uri_for(conn)) as client:
        first = await shop.make_invoice(25_000)
        await client.pay_invoice(first.bolt11, max_msat=25_000)
        second = await shop.make_invoice(6_000)    # 25 + 6 > 30 sat budget
        with pytest.raises(QuotaExceeded):
            await client.pay_invoice(second.bolt11, max_msat=6_000)
        assert await shop.lookup_invoice(second.payment_hash) == InvoiceState.PENDING
        assert await shop.balance() == 25_000
        # a second connection has its own budget; wallet errors map to typed ones
        rich = service.new_connection(budget_msat=None)
    async with NwcWallet.from_uri(service.uri_for(rich)) as other:
        big = await shop.make_invoice(500_000)
        with pytest.raises(InsufficientBalance):
            await other.pay_invoice(big.bolt11, max_msat=500_000)
        await other.pay_invoice(second.bolt11, max_msat=6_000)
    assert await shop.balance() == 31_000


async def test_unissued_key_is_unauthorized(nwc_setup):
    service, conn, ledger = nwc_setup
    stranger = ConnectionUri(service.pubkey, tuple(service.relays), Keys.generate().secret_hex).to_uri()
    with pytest.raises(Unauthorized):
        await connect_wallet(stranger)
    client = NwcWallet.from_uri(stranger, timeout=10)
    try:
        inv = await ledger.wallet("shop").make_invoice(1_000)
        with pytest.raises(Unauthorized):
            await client.pay_invoice(inv.bolt11, max_msat=1_000)
    finally:
        await client.aclose()
    assert await ledger.wallet("svc").balance() == 100_000
    assert service.stats["unauthorized"] >= 1
    service.revoke(conn.client_pubkey)
    revoked = NwcWallet.from_uri(service.uri_for(conn), timeout=10)
    try:
        with pytest.raises(Unauthorized):
            await revoked.balance()
    finally:
        await revoked.aclose()


async def test_nip04_wallet_is_spoken_to_in_nip04(relay_url, dev_ledger):
    """A wallet whose info event has no encryption tag gets NIP-04 requests (and answers in NIP-04)."""
    service = NwcService(dev_ledger.wallet("svc"), [relay_url])
    conn = service.new_connection()

    async def legacy_info():
        info = Event.build(service.keys, 13194, "get_balance get_info", [])
        await service._pool.publish(info)

    service.publish_info = legacy_info  # type: ignore[method-assign]
    async with service.running():
        async with NwcWallet.from_uri(service.uri_for(conn)) as client:
            assert client.encryption == NIP04
            assert await client.balance() == 0
            async with RelayPool([relay_url]) as pool:
                reqs = await pool.query([Filter.of(kinds=[23194], authors=[conn.client_pubkey])], timeout=3)
            assert all("?iv=" in e.content for e in reqs)


async def test_timeout_when_no_service_answers(relay_url):
    uri = ConnectionUri(Keys.generate().public_key, (relay_url,), Keys.generate().secret_hex).to_uri()
    client = open_wallet(uri)
    client.timeout = 1.0
    try:
        with pytest.raises(WalletTimeout):
            await client.balance()
    finally:
        await client.aclose()


def test_uri_parsing_and_redaction():
    k, s = Keys.generate(), Keys.generate()
    uri = f"nostr+walletconnect://{k.public_key}?relay=ws%3A%2F%2F127.0.0.1%3A1&relay=wss://r.example&secret={s.secret_hex}"
    conn = ConnectionUri.parse(uri)
    assert conn.relays == ("ws://127.0.0.1:1", "wss://r.example") and conn.secret == s.secret_hex
    assert ConnectionUri.parse(conn.to_uri()) == conn
    assert s.secret_hex not in redact_uri(uri) and s.secret_hex not in repr(NwcWallet(conn))
    from wallet import WalletError

    for bad in (f"nostr+walletconnect://{k.public_key}?secret={s.secret_hex}",
                f"nostr+walletconnect://nothex?relay=ws://x&secret={s.secret_hex}",
                f"nostr+walletconnect://{k.public_key}?relay=ws://x&secret=12"):
        with pytest.raises(WalletError) as info:
            open_wallet(bad)
        assert s.secret_hex not in str(info.value)
