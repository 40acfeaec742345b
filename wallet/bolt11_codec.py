"""BOLT11 encode (sign) and decode, wrapping the `bolt11` package into our own types.

Decoding verifies the invoice signature (against the `n` tag, or by key recovery) and
raises `InvoiceInvalid` for anything malformed, so callers never see bolt11's exceptions.

Speed: the `bolt11` package converts between bech32's 5-bit words and a bit array one word
at a time through `bitstring.pack` (quadratic appends): ~16 ms to decode and ~10 ms to encode
one invoice, all of it holding the GIL. A paid job decodes the same invoice 2-4 times (client
check, wallet, NWC service), which made 16 concurrent paid jobs CPU-bound (bench/payments.py).
`_use_fast_word_conversion` swaps those two helpers, inside the package's decode/encode
modules only, for equivalent big-integer conversions (same inputs, same outputs, checked
against the originals in tests/wallet/test_bolt11_fast.py): decode ~1.4 ms, encode ~4 ms.
Everything else — bech32 checksum, field rules, signature checks — is still the package's.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import bolt11 as _b11
from bitstring import BitArray, Bits
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags

from wallet.base import CURRENCY_TO_NETWORK, NETWORK_TO_CURRENCY
from wallet.errors import AmountAboveMax, InvoiceExpired, InvoiceInvalid

MAX_BOLT11_LEN = 7089  # BOLT11 has no hard limit; this is far above any real invoice


def u5_to_bits(words: list[int]) -> BitArray:
    """5-bit words -> their concatenated bits (what bolt11.bit_utils.u5_to_bitarray returns)."""
    if not words:
        return BitArray()
    value = 0
    for w in words:
        value = (value << 5) | w
    return BitArray(uint=value, length=5 * len(words))


def bits_to_u5(bits: Bits) -> list[int]:
    """Bits whose length is a multiple of 5 -> 5-bit words (bolt11.bit_utils.bitarray_to_u5)."""
    assert bits.len % 5 == 0
    n = bits.len // 5
    if n == 0:
        return []
    value = bits.uint
    return [(value >> (5 * (n - 1 - i))) & 31 for i in range(n)]


def _use_fast_word_conversion() -> None:
    """Point bolt11's decode/encode modules at the fast conversions (no-op if they moved)."""
    for mod_name, attr, fast in (("bolt11.decode", "u5_to_bitarray", u5_to_bits),
                                 ("bolt11.encode", "bitarray_to_u5", bits_to_u5)):
        mod = sys.modules.get(mod_name)
        if mod is not None and callable(getattr(mod, attr, None)):
            setattr(mod, attr, fast)


_use_fast_word_conversion()


@dataclass(frozen=True, slots=True)
class DecodedInvoice:
    """The fields of a BOLT11 invoice a payer checks before paying."""

    bolt11: str
    payment_hash: str
    amount_msat: int | None      # None: amountless invoice
    network: str                 # "bitcoin" | "testnet" | "signet" | "regtest"
    payee: str                   # 33-byte compressed node pubkey, hex
    created_at: int              # unix seconds
    expiry_s: int
    description: str | None

    @property
    def expires_at(self) -> int:
        return self.created_at + self.expiry_s

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def decode_bolt11(text: str) -> DecodedInvoice:
    """Decode and signature-check a BOLT11 string; InvoiceInvalid if it is not a valid invoice."""
    if not isinstance(text, str) or not text.strip():
        raise InvoiceInvalid("invoice is empty")
    text = text.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:"):]
    if len(text) > MAX_BOLT11_LEN:
        raise InvoiceInvalid(f"invoice is too long ({len(text)} chars)")
    try:
        inv = _b11.decode(text)
        payment_hash = inv.payment_hash
    except Exception as exc:  # bolt11 raises many unrelated types (ValueError, its own, bitstring's)
        raise InvoiceInvalid(f"not a valid BOLT11 invoice ({type(exc).__name__}: {exc})"[:200]) from None
    network = CURRENCY_TO_NETWORK.get(inv.currency)
    if network is None:  # pragma: no cover - verify_hrp only admits the four currencies
        raise InvoiceInvalid(f"unknown invoice currency {inv.currency!r}")
    return DecodedInvoice(
        bolt11=text.lower(),
        payment_hash=payment_hash,
        amount_msat=int(inv.amount_msat) if inv.amount_msat else None,
        network=network,
        payee=inv.payee or "",
        created_at=int(inv.date),
        expiry_s=int(inv.expiry),
        description=inv.description,
    )


def decode_payable(text: str, *, max_msat: int) -> DecodedInvoice:
    """Decode an invoice a wallet is about to pay and refuse what no wallet here pays:
    amountless, above `max_msat`, or expired (typed errors, before any money moves)."""
    decoded = decode_bolt11(text)
    if decoded.amount_msat is None:
        raise InvoiceInvalid("amountless invoices are not supported")
    if decoded.amount_msat > max_msat:
        raise AmountAboveMax(f"invoice asks {decoded.amount_msat} msat, above the allowed {max_msat} msat")
    if decoded.is_expired():
        raise InvoiceExpired("invoice expired; ask the payee for a new one")
    return decoded


def encode_bolt11(*, node_secret_hex: str, network: str, amount_msat: int, payment_hash: str,
                  payment_secret: str, memo: str, expiry_s: int, created_at: int | None = None) -> str:
    """Build and sign a BOLT11 invoice with the node key (secp256k1 recoverable ECDSA)."""
    currency = NETWORK_TO_CURRENCY.get(network)
    if currency is None:
        raise InvoiceInvalid(f"unknown network {network!r}")
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash)
    tags.add(TagChar.payment_secret, payment_secret)
    tags.add(TagChar.description, memo)
    tags.add(TagChar.expire_time, int(expiry_s))
    tags.add(TagChar.min_final_cltv_expiry, 18)
    invoice = Bolt11(currency=currency, date=int(time.time() if created_at is None else created_at),
                     tags=tags, amount_msat=MilliSatoshi(amount_msat))
    return _b11.encode(invoice, node_secret_hex)
