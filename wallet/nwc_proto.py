"""NIP-47 pieces shared by the client (wallet.nwc) and the service (wallet.nwc_service).

- the connection URI `nostr+walletconnect://<wallet pubkey>?relay=<url>&relay=…&secret=<hex>`;
- payload encryption: NIP-44 v2 (request tagged `["encryption", "nip44_v2"]`) or the legacy
  NIP-04 (no tag), chosen per request and mirrored by the response;
- the error codes and their mapping to/from wallet.errors;
- notification kinds and types (`payment_received`, `hold_invoice_accepted`) and the
  hold-invoice method names (NIP-47 `make_hold_invoice`, `settle_hold_invoice`,
  `cancel_hold_invoice`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pylon.nostr import crypto
from pylon.nostr.errors import DecryptionError, InvalidKey
from pylon.nostr.keys import Keys, normalize_pubkey
from wallet import errors as E

SCHEME = "nostr+walletconnect"
INFO_KIND, REQUEST_KIND, RESPONSE_KIND = 13194, 23194, 23195
#: Notifications (NIP-47 "Notification Events"): 23197 is NIP-44 encrypted, 23196 the NIP-04
#: twin a service that speaks both also publishes (for legacy clients).
NOTIFICATION_KIND, LEGACY_NOTIFICATION_KIND = 23197, 23196
HOLD_METHODS = ("make_hold_invoice", "settle_hold_invoice", "cancel_hold_invoice")
HOLD_ACCEPTED = "hold_invoice_accepted"  # the notification that a payment to a hold invoice is locked
PAYMENT_RECEIVED = "payment_received"  # the notification that an invoice the service made was paid
NIP44 = "nip44_v2"
NIP04 = "nip04"
MAX_CONTENT = 64 * 1024

# NIP-47 code -> our typed error (client side).
CODE_TO_ERROR: dict[str, type[E.WalletError]] = {
    "INSUFFICIENT_BALANCE": E.InsufficientBalance,
    "QUOTA_EXCEEDED": E.QuotaExceeded,
    "PAYMENT_FAILED": E.PaymentFailed,
    "NOT_IMPLEMENTED": E.NotImplementedByWallet,
    "UNAUTHORIZED": E.Unauthorized,
    "RESTRICTED": E.Unauthorized,
    "NOT_FOUND": E.InvoiceNotFound,
    "RATE_LIMITED": E.WalletError,
    "UNSUPPORTED_ENCRYPTION": E.WalletError,
    "INTERNAL": E.WalletError,
    "OTHER": E.WalletError,
}


def error_to_code(exc: BaseException) -> str:
    """Our typed error -> the NIP-47 code a service answers with (service side)."""
    if isinstance(exc, E.InsufficientBalance):
        return "INSUFFICIENT_BALANCE"
    if isinstance(exc, E.QuotaExceeded):
        return "QUOTA_EXCEEDED"
    if isinstance(exc, E.InvoiceNotFound):
        return "NOT_FOUND"
    if isinstance(exc, E.NotImplementedByWallet):
        return "NOT_IMPLEMENTED"
    if isinstance(exc, E.Unauthorized):
        return "RESTRICTED"
    if isinstance(exc, E.PaymentFailed):
        return "PAYMENT_FAILED"
    if isinstance(exc, E.InvoiceInvalid):
        return "OTHER"
    return "INTERNAL"


def error_from_response(code: Any, message: Any) -> E.WalletError:
    cls = CODE_TO_ERROR.get(str(code), E.WalletError)
    text = str(message)[:300] if message else str(code)
    return cls(f"wallet answered {code}: {text}")


@dataclass(frozen=True)
class ConnectionUri:
    """A parsed connection URI. `secret` is the client's key: never print it."""

    wallet_pubkey: str
    relays: tuple[str, ...]
    secret: str
    lud16: str | None = None

    @classmethod
    def parse(cls, uri: str) -> "ConnectionUri":
        parts = urlsplit(uri)
        if parts.scheme.lower() not in (SCHEME, "nostrwalletconnect"):
            raise E.WalletUriInvalid("not a nostr+walletconnect:// URI")
        pubkey = unquote(parts.netloc or parts.path.lstrip("/"))
        q = parse_qs(parts.query)
        relays = tuple(r for r in q.get("relay", []) if r)
        secrets_ = q.get("secret", [])
        try:
            pubkey = normalize_pubkey(pubkey)
            Keys.from_hex(secrets_[0] if secrets_ else "")
        except InvalidKey:
            raise E.WalletUriInvalid("NWC URI needs a 64-hex wallet pubkey and a 64-hex secret") from None
        if not relays:
            raise E.WalletUriInvalid("NWC URI needs at least one relay= parameter")
        for r in relays:
            if not r.startswith(("ws://", "wss://")):
                raise E.WalletUriInvalid("NWC relay URLs must start with ws:// or wss://")
        lud16 = q.get("lud16")
        return cls(pubkey, relays, secrets_[0].lower(), lud16[0] if lud16 else None)

    def to_uri(self) -> str:
        query = "&".join(f"relay={quote(r, safe='')}" for r in self.relays) + f"&secret={self.secret}"
        if self.lud16:
            query += f"&lud16={quote(self.lud16, safe='@')}"
        return f"{SCHEME}://{self.wallet_pubkey}?{query}"


def encrypt(keys: Keys, peer: str, payload: dict[str, Any], scheme: str) -> str:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return crypto.encrypt_to(keys, peer, text) if scheme == NIP44 else crypto.encrypt_nip04_to(keys, peer, text)


def decrypt(keys: Keys, peer: str, content: str) -> dict[str, Any]:
    """Decrypt either scheme (NIP-04 payloads contain '?iv=') and parse the JSON object."""
    if not isinstance(content, str) or len(content) > MAX_CONTENT:
        raise DecryptionError("NWC payload too large or not a string")
    data = json.loads(crypto.decrypt_from(keys, peer, content))
    if not isinstance(data, dict):
        raise ValueError("NWC payload is not a JSON object")
    return data


def scheme_of_event_tags(tags: list[list[str]]) -> str:
    """The scheme a request/response declares: its `encryption` tag, else NIP-04 (NIP-47 §encryption)."""
    for t in tags:
        if len(t) >= 2 and t[0] == "encryption":
            return NIP44 if NIP44 in t[1].split() else t[1]
    return NIP04


def info_schemes(tags: list[list[str]]) -> list[str]:
    """Schemes an info event advertises (`["encryption", "nip44_v2 nip04"]`); none = NIP-04 only."""
    out: list[str] = []
    for t in tags:
        if t and t[0] == "encryption":
            for v in t[1:]:
                out.extend(v.split())
    return out or [NIP04]


def info_notifications(tags: list[list[str]]) -> list[str]:
    """Notification types an info event advertises (`["notifications", "hold_invoice_accepted …"]`)."""
    out: list[str] = []
    for t in tags:
        if t and t[0] == "notifications":
            for v in t[1:]:
                out.extend(v.split())
    return out
