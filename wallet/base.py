"""The `Wallet` protocol every wallet implements, and the value types it exchanges.

Client and provider code depend only on this module (and wallet.errors), never on a
concrete wallet: `wallet.open_wallet(uri)` picks the implementation from the URI scheme.
Amounts are integer millisats; payment hashes and preimages are lowercase hex.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

NETWORKS = ("bitcoin", "testnet", "signet", "regtest")

#: BOLT11 human-readable currency prefix (after "ln") -> network name.
CURRENCY_TO_NETWORK = {"bc": "bitcoin", "tb": "testnet", "tbs": "signet", "bcrt": "regtest"}
NETWORK_TO_CURRENCY = {v: k for k, v in CURRENCY_TO_NETWORK.items()}


class InvoiceState(str, Enum):
    """Where an invoice (incoming) or a payment (outgoing) stands."""

    PENDING = "pending"    # issued / in flight, not settled yet
    SETTLED = "settled"    # paid: the preimage was revealed
    EXPIRED = "expired"    # unpaid and past its expiry: it can no longer be paid
    FAILED = "failed"      # no money moved (for lookup_payment: we have no payment for that hash)


@dataclass(frozen=True, slots=True)
class Payment:
    """The proof of an outgoing payment: sha256(preimage) == payment_hash."""

    preimage: str
    fee_msat: int
    payment_hash: str
    amount_msat: int

    def preimage_matches(self) -> bool:
        """True when the preimage really hashes to the payment hash (what a payer should check)."""
        try:
            return hashlib.sha256(bytes.fromhex(self.preimage)).hexdigest() == self.payment_hash.lower()
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


@runtime_checkable
class SupportsPaymentDetails(Protocol):
    """Optional extension: wallets that can return the full proof of a past payment.

    `pylon.customer.ledger.Ledger.recover` uses it (when present) to store the preimage and fee of a
    payment that settled while the process was down."""

    async def payment_details(self, payment_hash: str) -> Payment | None: ...
