"""The `Wallet` protocol every wallet implements, and the value types it exchanges.

Client and provider code depend only on this module (and wallet.errors), never on a
concrete wallet: `wallet.open_wallet(uri)` picks the implementation from the URI scheme.
Amounts are integer millisats; payment hashes and preimages are lowercase hex.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

NETWORKS = ("bitcoin", "testnet", "signet", "regtest")
MAX_AMOUNT_MSAT = 21_000_000 * 100_000_000 * 1000  # every bitcoin there will ever be: no amount is above it

#: BOLT11 human-readable currency prefix (after "ln") -> network name.
CURRENCY_TO_NETWORK = {"bc": "bitcoin", "tb": "testnet", "tbs": "signet", "bcrt": "regtest"}
NETWORK_TO_CURRENCY = {v: k for k, v in CURRENCY_TO_NETWORK.items()}


class InvoiceState(str, Enum):
    """Where an invoice (incoming) or a payment (outgoing) stands."""

    PENDING = "pending"    # issued / in flight, not settled yet
    ACCEPTED = "accepted"  # hold invoices only: the payer's money is locked, the payee has not settled yet
    SETTLED = "settled"    # paid: the preimage was revealed
    EXPIRED = "expired"    # unpaid and past its expiry: it can no longer be paid
    FAILED = "failed"      # no money moved (for lookup_payment: we have no payment for that hash;
                           # for a hold invoice: cancelled, the payer refunded)


@dataclass(frozen=True, slots=True)
class Payment:
    """The proof of an outgoing payment: sha256(preimage) == payment_hash."""

    preimage: str
    fee_msat: int
    payment_hash: str
    amount_msat: int

    def preimage_matches(self) -> bool:
        """True when the preimage really hashes to the payment hash (what a payer should check)."""
        return preimage_opens(self.preimage, self.payment_hash)


def preimage_opens(preimage: str, payment_hash: str) -> bool:
    """sha256(preimage) == payment_hash, both hex; False for anything that is not hex."""
    try:
        return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash.lower()
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Invoice:
    """An invoice a wallet issued: what to hand to the payer, and how to look it up."""

    bolt11: str
    payment_hash: str
    amount_msat: int
    expires_at: int  # unix seconds


@runtime_checkable
class Wallet(Protocol):
    """What Pylon needs from a Lightning wallet. All I/O methods are coroutines.

    Errors are `wallet.errors.WalletError` subclasses; none of them leaks a secret.
    """

    network: str  # "regtest" | "bitcoin" | "testnet" | "signet"

    async def pay_invoice(self, bolt11: str, *, max_msat: int) -> Payment:
        """Pay `bolt11` if its amount is <= max_msat; returns the preimage and the fee paid.

        Raises AmountAboveMax, InsufficientBalance, InvoiceExpired, AlreadyPaid,
        PaymentFailed, InvoiceInvalid, Unauthorized, WalletUnreachable, WalletTimeout
        (outcome unknown: call lookup_payment)."""
        ...

    async def make_invoice(self, amount_msat: int, memo: str = "", expiry_s: int = 600) -> Invoice:
        """Issue an invoice for exactly `amount_msat` that expires after `expiry_s` seconds."""
        ...

    async def lookup_invoice(self, payment_hash: str) -> InvoiceState:
        """State of an invoice this wallet issued; raises InvoiceNotFound for unknown hashes."""
        ...

    async def lookup_payment(self, payment_hash: str) -> InvoiceState:
        """Did this wallet pay that hash? SETTLED (paid), PENDING (in flight) or FAILED (no payment).

        This is what crash recovery asks after a restart."""
        ...

    async def balance(self) -> int:
        """Spendable balance in millisats."""
        ...

    async def aclose(self) -> None:
        """Release connections; the wallet is unusable afterwards."""
        ...


# -- capabilities: what only some wallets do ------------------------------------------------------
# Callers test for them with `isinstance(wallet, SupportsX)` (the protocols are runtime-checkable),
# or `implements(wallet, SupportsX)` on a job's path, never with getattr probing or isinstance on
# a concrete wallet class. `isinstance` on a protocol only checks that the members exist; the
# signatures below are what mypy holds implementations to.
# (Whole-sat wallets declare `invoice_unit_msat`: that protocol lives with the pricing rule,
# pylon.jobs.pricing.DeclaresInvoiceUnit, which imports nothing else of wallet but `implements`.)


@runtime_checkable
class SupportsPaymentDetails(Protocol):
    """Wallets that can return the full proof of a past outgoing payment.

    `Ledger.recover` and `Budget` use it to store the preimage and fee of a payment whose
    outcome was unknown (a crash, a timeout) once the wallet says it settled."""

    async def payment_details(self, payment_hash: str) -> Payment | None:
        """The payment for that hash (preimage, fee), or None if this wallet did not pay it."""
        ...


@dataclass(frozen=True, slots=True)
class Received:
    """The proof of a settled incoming invoice: sha256(preimage) == payment_hash."""

    payment_hash: str
    preimage: str
    amount_msat: int
    settled_at: int  # unix seconds

    def preimage_matches(self) -> bool:
        return preimage_opens(self.preimage, self.payment_hash)


@runtime_checkable
class SupportsReceivedDetails(Protocol):
    """Wallets that can show the preimage and settle time of an invoice they were paid.

    NIP-47 lists both in `lookup_invoice`'s answer and in `payment_received`; the NWC service
    adds them where its wallet has this (a payer of the invoice may check the preimage)."""

    async def received_details(self, payment_hash: str) -> Received | None:
        """This wallet's settled invoice with that hash, or None (not ours, or not settled)."""
        ...


@runtime_checkable
class SupportsWaitInvoice(Protocol):
    """Wallets that can wake a waiter when an invoice settles: the dev wallet's watcher, NWC's
    `payment_received` notification (an NWC wallet that does not send it is looked up with
    backoff inside the wait). wallet.waiting waits with it when present, else polls
    `lookup_invoice` with backoff."""

    async def wait_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
        """Wait up to `timeout` seconds for the invoice to leave PENDING; returns its state then."""
        ...


@runtime_checkable
class SupportsConnect(Protocol):
    """Wallets with start-up I/O (NWC: relays, info event, the wallet's network).

    `wallet.connect_wallet` and the client call it before trusting `wallet.network`."""

    async def connect(self) -> object:
        """Open connections and read what the wallet announces; idempotent."""
        ...


@runtime_checkable
class SupportsNodePubkey(Protocol):
    """Wallets that know the Lightning node key their invoices are signed with."""

    @property
    def node_pubkey(self) -> str:
        """33-byte compressed secp256k1 public key, hex."""
        ...


@runtime_checkable
class SupportsPreimageInvoice(Protocol):
    """Wallets that issue an invoice for a preimage the caller chose (payment_hash = sha256(preimage)).

    Used by pay-for-the-key delivery (issue 10): paying the invoice reveals the preimage, which
    is the key to the already published result."""

    async def make_invoice_with_preimage(self, amount_msat: int, preimage: str, memo: str = "",
                                         expiry_s: int = 600) -> Invoice:
        """Issue an invoice whose payment hash is sha256(bytes.fromhex(preimage))."""
        ...


@runtime_checkable
class SupportsHoldInvoice(Protocol):
    """Wallets that issue hold invoices (NIP-47 make/settle/cancel_hold_invoice).

    The payer's HTLC is held until the payee settles with the preimage or cancels it; the
    payee learns the preimage only from the caller, never by itself. States of a hold invoice
    (`lookup_invoice`): PENDING (unpaid) -> ACCEPTED (the payer's money is locked) -> SETTLED
    (the payee revealed the preimage and has the money) or FAILED (cancelled, or not settled
    in time: the payer is refunded); an unpaid one past its expiry is EXPIRED.

    Having the methods is not having the feature: an NWC service may not list them, an LNbits
    funding source may lack them. `hold_invoices_offered` is the answer to act on."""

    async def hold_invoices_offered(self) -> bool:
        """Whether this wallet, as connected, really issues hold invoices (may do I/O once)."""
        ...

    async def make_hold_invoice(self, amount_msat: int, payment_hash: str, memo: str = "",
                                expiry_s: int = 600) -> Invoice:
        """Issue a hold invoice for `payment_hash` (the wallet does not know the preimage)."""
        ...

    async def wait_hold_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
        """Wait up to `timeout` seconds for the hold invoice to leave PENDING (NIP-47's
        `hold_invoice_accepted` where the wallet sends it); its state then (PENDING on timeout)."""
        ...

    async def settle_hold_invoice(self, preimage: str) -> None:
        """Claim a held payment by revealing its preimage (idempotent once settled)."""
        ...

    async def cancel_hold_invoice(self, payment_hash: str) -> None:
        """Give a held payment back to the payer, or make an unpaid hold invoice unpayable."""
        ...


_IMPLEMENTS: dict[tuple[type, type], bool] = {}


def implements(obj: object, protocol: Any) -> bool:
    """`isinstance(obj, protocol)` for a runtime-checkable capability protocol, remembered per
    class: on Python 3.11 each such check inspects every member (11-22 us), and a paid job asked
    five or more times. Valid for protocols whose members the class defines (methods, class
    attributes), as every capability here and pylon.jobs.pricing.DeclaresInvoiceUnit are."""
    key = (type(obj), protocol)
    found = _IMPLEMENTS.get(key)
    if found is None:
        found = _IMPLEMENTS[key] = isinstance(obj, protocol)
    return found
