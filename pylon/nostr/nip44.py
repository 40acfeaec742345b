"""NIP-44 v2 encrypted payloads: ECDH + HKDF + padding + ChaCha20 + HMAC-SHA256, base64.

Follows nostr-protocol/nips 44.md step by step and passes every vector of paulmillr/nip44
`nip44.vectors.json`. Why each check exists:

* Lengths are checked *before* base64 decoding so a huge or tiny payload is refused cheaply.
* The MAC is compared in constant time and checked before anything is decrypted.
* The padding is recomputed and compared, so a payload whose length prefix lies is refused.

Large messages: the spec (since 2026) allows plaintexts of 65,536 bytes and more with a
6-byte length prefix. Peers built on the 2023 revision refuse those payloads, and the
official vectors list such lengths as invalid to *encrypt*, so `encrypt` refuses them unless
`extended=True` is passed; `decrypt` accepts both forms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pylon.nostr.errors import DecryptionError
from pylon.nostr.keys import Keys

VERSION = 2
SALT = b"nip44-v2"
MIN_PLAINTEXT = 1
MAX_PLAINTEXT_CLASSIC = 65535          # the 2023 limit every peer understands
MAX_PLAINTEXT = 0xFFFFFFFF             # the extended (6-byte prefix) limit
EXTENDED_THRESHOLD = 65536
# Largest payload we decode (base64 chars): a 16 MiB plaintext is far beyond any job here.
MAX_PAYLOAD_CHARS = 4 * ((65 + 6 + 16 * 1024 * 1024 + 2) // 3 + 1)

__all__ = [
    "conversation_key", "message_keys", "calc_padded_len", "pad", "unpad",
    "encrypt", "decrypt", "DecryptionError",
]


# ----------------------------------------------------------------------------- keys
def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def conversation_key(sk_hex: str, peer_pubkey_hex: str) -> bytes:
    """The long-term key between two users: conv(a, B) == conv(b, A).

    Raises InvalidKey for a secret outside [1, n-1] or a public key that is not on the curve.
    """
    keys = Keys.from_hex(sk_hex)
    shared_x = keys.ecdh_x(peer_pubkey_hex)
    return _hkdf_extract(SALT, shared_x)


def conversation_key_for(keys: Keys, peer_pubkey_hex: str) -> bytes:
    """conversation_key for an already parsed Keys (saves re-parsing the secret)."""
    return _hkdf_extract(SALT, keys.ecdh_x(peer_pubkey_hex))


def message_keys(conv_key: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
    """(chacha_key, chacha_nonce, hmac_key) for one message."""
    if len(conv_key) != 32:
        raise DecryptionError("invalid conversation_key length")
    if len(nonce) != 32:
        raise DecryptionError("invalid nonce length")
    okm = _hkdf_expand(conv_key, nonce, 76)
    return okm[0:32], okm[32:44], okm[44:76]


# -------------------------------------------------------------------------- padding
def calc_padded_len(unpadded_len: int) -> int:
    """Padded length (without the length prefix) for a plaintext of `unpadded_len` bytes."""
    if unpadded_len <= 0:
        raise ValueError("unpadded length must be at least 1")
    if unpadded_len <= 32:
        return 32
    next_power = 1 << ((unpadded_len - 1).bit_length())
    chunk = 32 if next_power <= 256 else next_power // 8
    return chunk * ((unpadded_len - 1) // chunk + 1)


def pad(plaintext: str, *, extended: bool = False) -> bytes:
    raw = plaintext.encode("utf-8")
    n = len(raw)
    limit = MAX_PLAINTEXT if extended else MAX_PLAINTEXT_CLASSIC
    if n < MIN_PLAINTEXT or n > limit:
        raise DecryptionError(f"invalid plaintext length {n}: must be {MIN_PLAINTEXT}..{limit} bytes")
    prefix = struct.pack(">H", n) if n < EXTENDED_THRESHOLD else b"\x00\x00" + struct.pack(">I", n)
    return prefix + raw + bytes(calc_padded_len(n) - n)


def unpad(padded: bytes) -> str:
    if len(padded) < 2:
        raise DecryptionError("invalid padding")
    first_two = struct.unpack(">H", padded[0:2])[0]
    if first_two == 0:
        if len(padded) < 6:
            raise DecryptionError("invalid padding")
        n = struct.unpack(">I", padded[2:6])[0]
        if n < EXTENDED_THRESHOLD:
            raise DecryptionError("invalid padding")
        prefix_len = 6
    else:
        n = first_two
        prefix_len = 2
    body = padded[prefix_len:prefix_len + n]
    if n == 0 or len(body) != n or len(padded) != prefix_len + calc_padded_len(n):
        raise DecryptionError("invalid padding")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError("invalid padding: plaintext is not UTF-8") from None


# ----------------------------------------------------------------------- primitives
def _chacha20(key: bytes, nonce12: bytes, data: bytes) -> bytes:
    # cryptography's ChaCha20 takes a 16-byte nonce: 4-byte little-endian counter (0) + 12-byte nonce.
    cipher = Cipher(algorithms.ChaCha20(key, b"\x00\x00\x00\x00" + nonce12), mode=None)
    enc = cipher.encryptor()
    return enc.update(data) + enc.finalize()


def _hmac_aad(key: bytes, message: bytes, aad: bytes) -> bytes:
    if len(aad) != 32:
        raise DecryptionError("AAD associated data must be 32 bytes")
    return hmac.new(key, aad + message, hashlib.sha256).digest()


# ------------------------------------------------------------------------ payloads
def encrypt(plaintext: str, conversation_key: bytes, nonce: bytes | None = None, *, extended: bool = False) -> str:
    """Encrypt to a base64 v2 payload. `nonce` only for test vectors: leave it None.

    Raises DecryptionError (a NostrError) for an empty or too long plaintext.
    """
    if nonce is None:
        nonce = os.urandom(32)
    chacha_key, chacha_nonce, hmac_key = message_keys(conversation_key, nonce)
    padded = pad(plaintext, extended=extended)
    ciphertext = _chacha20(chacha_key, chacha_nonce, padded)
    mac = _hmac_aad(hmac_key, ciphertext, nonce)
    return base64.b64encode(bytes([VERSION]) + nonce + ciphertext + mac).decode("ascii")


def decode_payload(payload: str) -> tuple[bytes, bytes, bytes]:
    """Split a payload into (nonce, ciphertext, mac) after the spec's size and version checks."""
    if not isinstance(payload, str):
        raise DecryptionError("payload must be a string")
    plen = len(payload)
    if plen == 0 or payload[0] == "#":
        raise DecryptionError("unknown encryption version (not supported)")
    if plen < 132:
        raise DecryptionError("invalid payload size")
    if plen > MAX_PAYLOAD_CHARS:
        raise DecryptionError("payload too large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("invalid base64") from None
    dlen = len(data)
    if dlen < 99:
        raise DecryptionError("invalid data size")
    if data[0] != VERSION:
        raise DecryptionError(f"unknown encryption version {data[0]}")
    return data[1:33], data[33:dlen - 32], data[dlen - 32:]


def decrypt(payload: str, conversation_key: bytes) -> str:
    """Authenticate and decrypt a v2 payload; any failure raises DecryptionError."""
    nonce, ciphertext, mac = decode_payload(payload)
    chacha_key, chacha_nonce, hmac_key = message_keys(conversation_key, nonce)
    expected = _hmac_aad(hmac_key, ciphertext, nonce)
    if not hmac.compare_digest(expected, mac):
        raise DecryptionError("invalid MAC")
    return unpad(_chacha20(chacha_key, chacha_nonce, ciphertext))
