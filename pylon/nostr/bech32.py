"""NIP-19 bech32 forms (npub, nsec, note) on top of pynostr's BIP-173 codec."""

from __future__ import annotations

from pynostr import bech32 as _codec

from pylon.nostr.errors import InvalidKey


def encode(hrp: str, data: bytes) -> str:
    """bech32-encode `data` under human-readable part `hrp` (e.g. "npub")."""
    words = _codec.convertbits(data, 8, 5, True)
    return str(_codec.bech32_encode(hrp, words, _codec.Encoding.BECH32))


def decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32 string into (hrp, payload bytes); InvalidKey on any defect."""
    if not isinstance(text, str):
        raise InvalidKey("bech32: not a string")
    hrp, words, spec = _codec.bech32_decode(text.strip())
    if hrp is None or words is None or spec != _codec.Encoding.BECH32:
        raise InvalidKey("bech32: bad checksum, character or case")
    data = _codec.convertbits(words, 5, 8, False)
    if data is None:
        raise InvalidKey("bech32: bad padding")
    return hrp, bytes(data)
