"""Typed wallet seams: optional features are runtime-checkable protocols in wallet.base.

Callers test `isinstance(wallet, SupportsX)`, never getattr probing or a concrete class, so a
wallet that lacks a feature takes the other path. And the wallet package depends only on the
protocol core (pylon.errors, pylon.nostr) and the relay pool (NWC), none of which imports
wallet: no import cycle between the packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pylon.customer.ledger import Ledger
from wallet.base import (
    Invoice,
    InvoiceState,
    Payment,
    SupportsConnect,
    SupportsHoldInvoice,
    SupportsNodePubkey,
    SupportsPaymentDetails,
    SupportsPreimageInvoice,
    SupportsReceivedDetails,
    SupportsWaitInvoice,
    Wallet,
)
from wallet.dev import DevWallet
from wallet.lnbits import LNbitsWallet
from wallet.nwc import NwcWallet

REPO = Path(__file__).resolve().parents[2]
CAPABILITIES = (SupportsConnect, SupportsHoldInvoice, SupportsNodePubkey, SupportsPaymentDetails,
                SupportsPreimageInvoice, SupportsReceivedDetails, SupportsWaitInvoice)


def _caps(wallet: object) -> set[type]:
    return {c for c in CAPABILITIES if isinstance(wallet, c)}


class BareWalletDouble:
    """A double with the `Wallet` protocol only (no optional features), over a real DevWallet."""

    def __init__(self, inner: DevWallet) -> None:
        self._inner = inner
        self.network = inner.network

    async def pay_invoice(self, bolt11: str, *, max_msat: int) -> Payment:
        return await self._inner.pay_invoice(bolt11, max_msat=max_msat)

    async def make_invoice(self, amount_msat: int, memo: str = "", expiry_s: int = 600) -> Invoice:
        return await self._inner.make_invoice(amount_msat, memo, expiry_s)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceState:
        return await self._inner.lookup_invoice(payment_hash)

    async def lookup_payment(self, payment_hash: str) -> InvoiceState:
        return await self._inner.lookup_payment(payment_hash)

    async def balance(self) -> int:
        return await self._inner.balance()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_each_wallet_declares_what_it_can(dev_ledger) -> None:
    dev = dev_ledger.wallet("alice")
    lnbits = LNbitsWallet("http://127.0.0.1:9", "key")  # no I/O until a call
    nwc = NwcWallet.from_uri(f"nostr+walletconnect://{'a' * 64}?relay=ws%3A%2F%2F127.0.0.1%3A9&secret={'1' * 64}")
    try:
        for w in (dev, lnbits, nwc, BareWalletDouble(dev)):
            assert isinstance(w, Wallet)
        assert _caps(dev) == {SupportsPaymentDetails, SupportsWaitInvoice, SupportsNodePubkey, SupportsPreimageInvoice,
                              SupportsHoldInvoice, SupportsReceivedDetails}
        assert _caps(lnbits) == {SupportsPaymentDetails, SupportsReceivedDetails}
        # NWC has the hold-invoice methods; whether the service offers them is hold_invoices_offered().
        # It waits for invoices by the service's payment_received, else by lookups that thin out.
        assert _caps(nwc) == {SupportsPaymentDetails, SupportsConnect, SupportsHoldInvoice, SupportsWaitInvoice}
        assert _caps(BareWalletDouble(dev)) == set()
    finally:
        await lnbits.aclose()
        await nwc.aclose()


async def test_recovery_without_payment_details_marks_paid_without_a_preimage(tmp_path, dev_ledger) -> None:
    dev_ledger.fund("alice", 5_000)
    bob, alice = dev_ledger.wallet("bob"), dev_ledger.wallet("alice")
    inv = await bob.make_invoice(2_000)
    with Ledger(tmp_path / "r.sqlite") as led:  # a process wrote its intent, then stopped
        led.record_intent(job_id="j", provider="p", payment_hash=inv.payment_hash, amount_msat=2_000,
                          bolt11=inv.bolt11)
    await alice.pay_invoice(inv.bolt11, max_msat=2_000)  # ...after the wallet had paid
    with Ledger(tmp_path / "r.sqlite") as led:
        (r,) = await led.recover(BareWalletDouble(alice))
        assert r.status == "paid" and r.preimage is None and r.fee_msat == 0
        assert led.has_paid(inv.payment_hash)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any level (function-local imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if node.module in ("pylon", "wallet"))
    return out


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def test_wallet_imports_only_the_protocol_core_and_the_pool() -> None:
    allowed = ("pylon.errors", "pylon.nostr", "pylon.relay", "pylon.storage")
    for path in sorted((REPO / "wallet").rglob("*.py")):
        bad = {m for m in _imports(path) if _within(m, ("pylon",)) and not _within(m, allowed)}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}; wallet may import only {allowed}"


def test_what_wallet_imports_never_imports_wallet() -> None:
    files = [REPO / "pylon" / "errors.py", REPO / "pylon" / "storage.py", *(REPO / "pylon" / "nostr").rglob("*.py"),
             *(REPO / "pylon" / "relay").rglob("*.py")]
    for path in files:
        bad = {m for m in _imports(path) if _within(m, ("wallet",))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}: a wallet <-> pylon import cycle"


# -- implements(): the same answer, remembered per class (a paid job asks several times) ----------

def test_implements_gives_isinstances_answer_for_every_wallet_and_capability(tmp_path):
    from pylon.jobs.pricing import DeclaresInvoiceUnit
    from wallet import open_wallet
    from wallet.base import implements

    wallets = [open_wallet(f"dev://{tmp_path / 'ledger.sqlite'}?account=a"),
               LNbitsWallet("http://127.0.0.1:9", "k" * 32), object()]
    for capability in (*CAPABILITIES, DeclaresInvoiceUnit):
        for wallet in wallets:
            expected = isinstance(wallet, capability)
            assert implements(wallet, capability) is expected  # computed
            assert implements(wallet, capability) is expected  # remembered


def test_implements_remembers_per_class_and_capability():
    from wallet import base

    class Waits:
        async def wait_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
            return InvoiceState.PENDING

    assert base.implements(Waits(), SupportsWaitInvoice)
    assert not base.implements(Waits(), SupportsHoldInvoice)
    assert base._IMPLEMENTS[(Waits, SupportsWaitInvoice)] is True


def test_whole_sat_wallets_quote_in_whole_sats(tmp_path):
    from pylon.jobs.pricing import invoice_unit_msat
    from wallet import open_wallet

    assert invoice_unit_msat(LNbitsWallet("http://127.0.0.1:9", "k" * 32)) == 1000
    assert invoice_unit_msat(open_wallet(f"dev://{tmp_path / 'l.sqlite'}?account=a")) == 1
