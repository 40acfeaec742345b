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


_HEX = frozenset("0123456789abcdef")  # as pylon.nostr.event has it: importing it from there is a cycle (event -> keys -> here)


def event_id_from(value: str) -> str | None:
    """The 64-hex event id `value` names: hex itself, or NIP-19 `note1…` / `nevent1…`, with or
    without a `nostr:` prefix (NIP-21); None when it is none of these. One parser for every
    command that takes an event id (`pylon result`, `pylon trace`)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text.startswith("nostr:"):
        text = text[len("nostr:"):]
    if text.startswith(("note1", "nevent1")):
        try:
            hrp, data = decode(text)
        except InvalidKey:
            return None
        if hrp == "nevent":  # TLV records: type 0 holds the 32-byte event id
            tlv, data = data, b""
            while len(tlv) >= 2:
                kind, size = tlv[0], tlv[1]
                if kind == 0 and size == 32 and len(tlv) >= 34:
                    data = tlv[2:34]
                    break
                tlv = tlv[2 + size:]
        elif hrp != "note":
            return None
        return data.hex() if len(data) == 32 else None
    return text if len(text) == 64 and _HEX.issuperset(text) else None
