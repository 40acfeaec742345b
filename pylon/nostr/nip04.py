"""NIP-04 (legacy) encrypted direct messages: AES-256-CBC keyed by the raw ECDH x coordinate.

Only for talking to older peers: NIP-04 has no MAC, so a tampered payload may decrypt to
garbage instead of failing. New messages use NIP-44 v2 (see pylon.nostr.crypto).
Payload format: "<base64 ciphertext>?iv=<base64 16-byte iv>".
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pylon.nostr.errors import DecryptionError
from pylon.nostr.keys import Keys

# Refuse absurd payloads before decoding them (1 MiB of base64 is far beyond any DM).
MAX_PAYLOAD_CHARS = 1 << 20


def _shared_key(keys: Keys, peer_pubkey_hex: str) -> bytes:
    return keys.ecdh_x(peer_pubkey_hex)


def encrypt_with_key(shared_x: bytes, plaintext: str, iv: bytes | None = None) -> str:
    """Encrypt under an already computed shared x coordinate (32 bytes)."""
    iv = os.urandom(16) if iv is None else iv
    if len(iv) != 16:
        raise ValueError("NIP-04 iv must be 16 bytes")
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    enc = Cipher(algorithms.AES(shared_x), modes.CBC(iv)).encryptor()
    ct = enc.update(data) + enc.finalize()
    return base64.b64encode(ct).decode("ascii") + "?iv=" + base64.b64encode(iv).decode("ascii")


def decrypt_with_key(shared_x: bytes, payload: str) -> str:
    """Decrypt "ct?iv=iv" under a shared x coordinate; DecryptionError on any defect."""
    if not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_CHARS:
        raise DecryptionError("NIP-04 payload must be a string of reasonable size")
    ct_b64, sep, iv_b64 = payload.partition("?iv=")
    if not sep:
        raise DecryptionError("NIP-04 payload lacks '?iv='")
    try:
        ct = base64.b64decode(ct_b64, validate=True)
        iv = base64.b64decode(iv_b64, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("NIP-04 payload is not base64") from None
    if len(iv) != 16:
        raise DecryptionError("NIP-04 iv must be 16 bytes")
    if not ct or len(ct) % 16:
        raise DecryptionError("NIP-04 ciphertext length must be a positive multiple of 16")
    dec = Cipher(algorithms.AES(shared_x), modes.CBC(iv)).decryptor()
    padded = dec.update(ct) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        data = unpadder.update(padded) + unpadder.finalize()
        return data.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise DecryptionError("NIP-04 decryption failed (wrong key or corrupted payload)") from None


def encrypt(keys: Keys, peer_pubkey_hex: str, plaintext: str) -> str:
    """Encrypt `plaintext` for `peer_pubkey_hex` as "b64?iv=b64"."""
    return encrypt_with_key(_shared_key(keys, peer_pubkey_hex), plaintext)


def decrypt(keys: Keys, peer_pubkey_hex: str, payload: str) -> str:
    """Decrypt a payload that `peer_pubkey_hex` sent us (or we sent them)."""
    return decrypt_with_key(_shared_key(keys, peer_pubkey_hex), payload)
