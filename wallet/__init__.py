"""Lightning wallets behind one protocol, chosen by URI.

    from wallet import open_wallet
    w = open_wallet("dev:///tmp/ledger.sqlite?account=alice")
    inv = await w.make_invoice(21_000, "memo")
    pay = await other.pay_invoice(inv.bolt11, max_msat=21_000)

URI schemes:
  dev:///<abs path to ledger.sqlite>?account=<name>     wallet.dev.DevWallet (regtest, local)
  lnbits://<api key>@<host>:<port>[?tls=1]                wallet.lnbits.LNbitsWallet
  nostr+walletconnect://<pubkey>?relay=<ws url>&secret=<hex>   wallet.nwc.NwcWallet (NIP-47)

A URI may hold a secret: print `redact_uri(uri)`, never the URI. Implementations are
imported lazily so `import wallet` stays cheap.
"""

from __future__ import annotations

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
from wallet.errors import (
    AlreadyPaid,
    AmountAboveMax,
    InsufficientBalance,
    InvoiceExpired,
    InvoiceInvalid,
    InvoiceNotFound,
    NotImplementedByWallet,
    PaymentFailed,
    QuotaExceeded,
    Unauthorized,
    WalletError,
    WalletTimeout,
    WalletUnreachable,
    WalletUriInvalid,
)
from wallet.uri import redact_uri, scheme_of

SCHEMES = ("dev", "lnbits", "nostr+walletconnect")  # the spellings error messages suggest
_LNBITS_SCHEMES = ("lnbits", "lnbits+https", "lnbits+http")
_NWC_SCHEMES = ("nostr+walletconnect", "nostrwalletconnect")
#: Every scheme open_wallet accepts (aliases included): callers refuse others before opening.
KNOWN_SCHEMES = frozenset(("dev", *_LNBITS_SCHEMES, *_NWC_SCHEMES))


def open_wallet(uri: str) -> Wallet:
    """Build the wallet a URI names. Raises WalletError (with the URI redacted) if it is unusable.

    Opening does no network I/O; the first call that needs the wallet connects."""
    if not isinstance(uri, str) or not uri.strip():
        raise WalletError("no wallet configured: pass --wallet URI on the command line or a wallet URI in code, "
                          "or set PYLON_WALLET")
    uri = uri.strip()
    scheme = _known_scheme(uri)  # each from_uri below parses the rest (check_uri would parse it twice)
    if scheme == "dev":
        from wallet.dev import DevWallet

        return DevWallet.from_uri(uri)
    if scheme in _LNBITS_SCHEMES:
        from wallet.lnbits import LNbitsWallet

        return LNbitsWallet.from_uri(uri)
    if scheme in _NWC_SCHEMES:
        from wallet.nwc import NwcWallet

        return NwcWallet.from_uri(uri)
    raise AssertionError(scheme)  # _known_scheme let through a scheme no branch above takes


def check_uri(uri: str) -> str:
    """The URI's scheme, when a wallet takes it and the URI parses; else WalletUriInvalid
    (exit 2), found without opening anything (a dev:// wallet creates its ledger file when opened)."""
    uri = uri.strip()
    scheme = _known_scheme(uri)
    # the rest of the URI too (a mistyped parameter, a missing key), still without opening it
    if scheme == "dev":
        from wallet.dev import parse_dev_uri

        parse_dev_uri(uri)
    elif scheme in _LNBITS_SCHEMES:
        from wallet.lnbits import parse_lnbits_uri

        parse_lnbits_uri(uri)
    else:
        from wallet.nwc_proto import ConnectionUri

        ConnectionUri.parse(uri)
    return scheme


def _known_scheme(uri: str) -> str:
    """The scheme of `uri` when a wallet takes it; WalletUriInvalid otherwise."""
    scheme = scheme_of(uri)
    hint = "use one of: " + ", ".join(s + "://…" for s in SCHEMES) + " (docs/WALLETS.md)"
    if not scheme:  # not echoed: it may be a bare key or secret pasted without its scheme
        raise WalletUriInvalid("not a wallet URI: it has no scheme", hint=hint)
    if scheme not in KNOWN_SCHEMES:
        raise WalletUriInvalid(f"unknown wallet URI scheme in {redact_uri(uri)!r}", hint=hint)
    return scheme


async def connect_wallet(uri: str) -> Wallet:
    """open_wallet + the wallet's own start-up I/O where it has any (NWC: relays, info event,
    network via get_info). Use this before reading `wallet.network` for invoice checks."""
    w = open_wallet(uri)
    if isinstance(w, SupportsConnect):
        try:
            await w.connect()
        except BaseException:
            await w.aclose()
            raise
    return w


__all__ = [
    "AlreadyPaid", "AmountAboveMax", "InsufficientBalance", "Invoice", "InvoiceExpired",
    "InvoiceInvalid", "InvoiceNotFound", "InvoiceState", "KNOWN_SCHEMES", "NotImplementedByWallet", "Payment",
    "PaymentFailed", "QuotaExceeded", "SupportsConnect", "SupportsHoldInvoice", "SupportsNodePubkey",
    "SupportsPaymentDetails", "SupportsPreimageInvoice", "SupportsReceivedDetails", "SupportsWaitInvoice",
    "Unauthorized", "Wallet",
    "WalletError", "WalletTimeout", "WalletUnreachable", "WalletUriInvalid", "check_uri", "connect_wallet", "open_wallet", "redact_uri", "scheme_of",
]
