"""Pay for the key (atomic delivery): the wire format of a result sealed under a secret whose
hash is the invoice's payment hash, and of the fraud report when it does not open.

Lightning reveals an invoice's preimage to whoever pays it, and only the payee picks it. So:

1. The customer asks for it with `["param", "delivery", "key"]` on the request (a provider
   that does not know it ignores the unknown param and quotes the usual way; Pylon providers
   announce `"delivery": ["key"]` in NIP-89 when their wallet takes a caller-chosen preimage).
2. The provider runs the job first (no readable `partial` feedback in this mode: only
   `processing`), draws a fresh 32-byte secret P and publishes the kind-6050 result with
   content = `seal(P, body)` where body is what the result would have carried (NIP-44
   encrypted to the customer when the job was encrypted), and tags
   `["delivery", "key", sha256(P)]` and `["amount", msat, bolt11]` with an invoice whose payment
   hash is sha256(P) (`make_invoice_with_preimage`).
3. The customer checks the invoice like any quote (amount tag, bid, caps, budget, network,
   never paid) and that its payment hash equals the `delivery` tag, pays, gets P as the
   payment's preimage and opens the result. Paid exactly when it can read the answer.
4. If it does not open (the AEAD tag fails), the customer holds a proof anyone can check:
   the provider-signed result (which commits to the ciphertext and the invoice), the
   invoice, and P. `build_fraud_report` makes it a NIP-32 label (kind 1985, `L` =
   `pylon/delivery`, `l` = `undecryptable`) naming the provider (`p`) and the result and job
   (`e`), with the proof as JSON content; `verify_fraud_report` checks it from the event alone.

seal(P, x) = base64(0x01 | nonce(12) | ChaCha20-Poly1305(key=P, nonce, x, aad=b"pylon-key-v1")).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pylon.errors import PylonError
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

if TYPE_CHECKING:  # pragma: no cover
    from pylon.jobs.nip90 import JobResult

DELIVERY_PARAM: Final = "delivery"
KEY_MODE: Final = "key"
DELIVERY_TAG: Final = "delivery"
KIND_LABEL: Final = 1985
LABEL_NAMESPACE: Final = "pylon/delivery"
LABEL_FRAUD: Final = "undecryptable"
_VERSION: Final = b"\x01"
_AAD: Final = b"pylon-key-v1"


class SealError(PylonError):
    """A sealed result does not open with the key (or is not a sealed result at all)."""


def new_key() -> str:
    """A fresh 32-byte secret, hex: the result key and the invoice preimage."""
    return os.urandom(32).hex()


def key_hash(key_hex: str) -> str:
    return hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()


def seal(key_hex: str, plaintext: str) -> str:
    nonce = os.urandom(12)
    body = ChaCha20Poly1305(bytes.fromhex(key_hex)).encrypt(nonce, plaintext.encode(), _AAD)
    return base64.b64encode(_VERSION + nonce + body).decode()


def open_sealed(key_hex: str, payload: str) -> str:
    """The plaintext; SealError when the key is wrong or the payload was tampered with."""
    try:
        raw = base64.b64decode(payload, validate=True)
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise SealError("sealed result is not base64 (or the key is not hex)") from None
    if len(raw) < 1 + 12 + 16 or raw[:1] != _VERSION or len(key) != 32:
        raise SealError("not a version-1 sealed result")
    try:
        return ChaCha20Poly1305(key).decrypt(raw[1:13], raw[13:], _AAD).decode()
    except (InvalidTag, UnicodeDecodeError):
        raise SealError("the sealed result does not open with the paid key") from None


def delivery_hash(event: Event) -> str | None:
    """sha256(P) from a result's `["delivery", "key", hash]` tag; None for an ordinary result."""
    tag = event.first_tag(DELIVERY_TAG)
    if tag and len(tag) >= 3 and tag[1] == KEY_MODE and len(tag[2]) == 64:
        return tag[2].lower()
    return None


def wants_key(extra_params: dict[str, Any]) -> bool:
    """Did the request ask for pay-for-the-key delivery?"""
    return str(extra_params.get(DELIVERY_PARAM, "")).strip().lower() == KEY_MODE


# ------------------------------------------------------------------------------ fraud proof
@dataclass(frozen=True, slots=True)
class FraudProof:
    result_event: Event
    bolt11: str
    preimage: str


def build_fraud_report(keys: Keys, proof: FraudProof, job_id: str) -> Event:
    """A signed NIP-32 label: this provider's sealed result does not open with the key its invoice revealed."""
    content = json.dumps({"result": json.loads(proof.result_event.to_json()), "bolt11": proof.bolt11,
                          "preimage": proof.preimage}, separators=(",", ":"))
    tags = [["L", LABEL_NAMESPACE], ["l", LABEL_FRAUD, LABEL_NAMESPACE], ["p", proof.result_event.pubkey],
            ["e", proof.result_event.id], ["e", job_id], ["alt", "Pylon fraud report: a paid result did not decrypt"]]
    return Event.build(keys, KIND_LABEL, content, tags)


def verify_fraud_report(report: Event) -> str:
    """Check a fraud report from the event alone; returns the guilty provider's pubkey.

    Raises SealError saying which check failed. Checked: the embedded result is signed by the
    named provider, is a sealed result, its invoice (signed into that result) has payment hash
    sha256(preimage) = the delivery tag, and its content does not open with that preimage."""
    from wallet.bolt11_codec import decode_bolt11

    try:
        data = json.loads(report.content)
        result = Event.from_json(json.dumps(data["result"]))
        bolt11, preimage = str(data["bolt11"]), str(data["preimage"])
    except Exception:
        raise SealError("report content is not {result, bolt11, preimage}") from None
    if not result.is_valid():
        raise SealError("the embedded result's signature does not verify")
    if result.pubkey not in report.tag_values("p"):
        raise SealError("the report does not name the result's author")
    hashed = delivery_hash(result)
    amount = result.first_tag("amount")
    if hashed is None or not amount or len(amount) < 3 or amount[2] != bolt11:
        raise SealError("the result is not a sealed result carrying this invoice")
    try:
        invoice_hash = decode_bolt11(bolt11).payment_hash
    except Exception:
        raise SealError("the invoice does not decode") from None
    if not (key_hash(preimage) == hashed == invoice_hash.lower()):
        raise SealError("the preimage does not match the invoice's payment hash")
    try:
        open_sealed(preimage, result.content)
    except SealError:
        return result.pubkey
    raise SealError("the result opens with the preimage: no fraud")


# ------------------------------------------------------------------------------ customer side
def parse_sealed_result(event: Event) -> "JobResult":
    """A sealed result's tags (amount, bolt11, usage, model, e/p) with its text still sealed ("")."""
    from pylon.jobs.nip90 import JobParseError, JobResult

    if delivery_hash(event) is None:
        raise JobParseError("not a sealed (pay-for-the-key) result")
    bare = Event(id=event.id, pubkey=event.pubkey, created_at=event.created_at, kind=event.kind,
                 tags=[t for t in event.tags if t[:1] != ["encrypted"]], content="", sig=event.sig)
    result = JobResult.from_event(bare, None)
    result.encrypted = any(t[:1] == ["encrypted"] for t in event.tags)
    result.event = event
    return result


def open_sealed_result(event: Event, preimage: str, keys: Keys) -> "JobResult":
    """The sealed result opened with the paid preimage (and NIP-44 when the job was encrypted).

    Raises SealError when the key does not open it: the caller holds a fraud proof."""
    from pylon.nostr.crypto import decrypt_from

    result = parse_sealed_result(event)
    body = open_sealed(preimage, event.content)
    if result.encrypted and body:
        try:
            body = decrypt_from(keys, event.pubkey, body)
        except Exception:
            raise SealError("the opened result does not decrypt (NIP-44) for us") from None
    result.text = body
    return result
