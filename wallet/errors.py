"""Typed wallet errors: every failure a wallet can report, as one class each.

All subclass `pylon.errors.WalletError` (a `PaymentError`), so the CLI shows them as one red
line with the payments exit code (5), and callers can catch the whole family with `WalletError`.
Messages never contain secrets (wallet URIs, keys): build them from redacted values.
"""

from __future__ import annotations

from pylon.errors import ConfigError, WalletError

__all__ = ["WalletError", "InsufficientBalance", "PaymentFailed", "AmountAboveMax", "InvoiceExpired", "AlreadyPaid",
           "QuotaExceeded", "Unauthorized", "WalletUnreachable", "WalletTimeout", "NotImplementedByWallet",
           "InvoiceInvalid", "InvoiceNotFound", "WalletUriInvalid"]


class InsufficientBalance(WalletError):
    """The paying account holds less than the invoice amount (plus fees)."""


class PaymentFailed(WalletError):
    """The wallet tried (or refused) to pay and no money moved."""


class AmountAboveMax(PaymentFailed):
    """The invoice asks for more than the caller's `max_msat`; nothing was paid."""


class InvoiceExpired(PaymentFailed):
    """The invoice expired before it was paid; nothing was paid."""


class AlreadyPaid(PaymentFailed):
    """The invoice was already paid (by this or another account); nothing was paid again."""


class QuotaExceeded(PaymentFailed):
    """A spending budget (e.g. an NWC connection's) would be exceeded; nothing was paid."""


class Unauthorized(WalletError):
    """The wallet rejected our credentials (bad key, read-only key used to pay, unknown NWC connection)."""


class WalletUnreachable(WalletError):
    """The wallet (LNbits server, NWC relay, ledger file) could not be reached."""


class WalletTimeout(WalletError):
    """The wallet did not answer in time; the outcome of a payment is unknown — look it up."""


class NotImplementedByWallet(WalletError):
    """The wallet does not support this operation."""


class InvoiceInvalid(WalletError):
    """A BOLT11 string could not be decoded, or an invoice request had bad parameters."""


class InvoiceNotFound(WalletError):
    """The wallet knows no invoice with that payment hash."""


class WalletUriInvalid(WalletError, ConfigError):
    """The wallet URI itself is wrong: an unknown scheme, a missing or malformed part. The user's
    configuration, so exit 2 like any other bad flag, found before anything starts; still a
    WalletError for code that catches the family."""

    exit_code = ConfigError.exit_code
