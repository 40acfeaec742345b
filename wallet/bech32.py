"""Bech32 (BIP-173) as BOLT11 uses it: checksum, 5-bit words, and conversions to bytes/ints.

BOLT11 invoices are bech32 without BIP-173's 90-character limit, so the generic decoders
(which enforce it, or skip it inconsistently) are not reused here. Words are held as bytes
(one word per byte, via bytes.translate) and turned into integers by `int(..., 32)`, so
every step is linear in the invoice length and mostly in C; a bit array built word by word
(what the `bolt11` package does) is quadratic.
"""

from __future__ import annotations

import base64
import re
import threading
from functools import lru_cache

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
CHECKSUM_WORDS = 6
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _xor_of_generators(top: int) -> int:
    acc = 0
    for i in range(5):
        if (top >> i) & 1:
            acc ^= _GENERATORS[i]
    return acc


# what the checksum XORs in for each value of the 5 bits shifted out: one lookup per word
_POLY_TABLE = tuple(_xor_of_generators(top) for top in range(32))


_B32_TO_WORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", bytes(range(32)))
_CHARSET_BYTES = CHARSET.encode("ascii")
_CHAR_TO_WORD = bytes.maketrans(_CHARSET_BYTES, bytes(range(32)))
_WORD_TO_DIGIT = bytes.maketrans(bytes(range(32)), b"0123456789abcdefghijklmnopqrstuv")
_WORD_TO_CHAR = bytes.maketrans(bytes(range(32)), _CHARSET_BYTES)
_PRINTABLE = re.compile(r"[\x21-\x7e]*")


class Bech32Error(ValueError):
    """The text is not valid bech32 (characters, mixed case, separator or checksum)."""


class _ParityChecksum:
    """BIP-173's checksum as 30 parities: the checksum step is linear over GF(2), so each of
    its 30 bits is the parity of the input bits under one fixed mask (`_masks[i]`).

    Why: the step-by-step loop is one Python iteration per word (~75 us for an invoice);
    here the words become one integer (in C) and the checksum is 30 ANDs and bit counts
    (~18 us). Bits are indexed from the end of the input (the last word holds bits 0-4), so
    one set of masks serves every length up to the longest seen; they are built on first use
    and grow by doubling (about 2.5 ms per 256 words, 19 bytes of masks per word), up to
    MAX_WORDS; longer inputs (no real invoice) take the loop.
    """

    MAX_WORDS = 2048

    def __init__(self) -> None:
        self._words = 0
        self._masks: tuple[int, ...] = ()
        self._lock = threading.Lock()

    def masks_for(self, n_words: int) -> tuple[int, ...]:
        if n_words > self._words:
            with self._lock:
                if n_words > self._words:
                    self._grow(min(max(n_words, 2 * self._words, 256), self.MAX_WORDS))
        return self._masks

    def _grow(self, n_words: int) -> None:
        # row d: for each checksum bit i (word 29 - i), the 5 bits it takes from the word d
        # places before the end, i.e. bit i of T^d(e_b) for b = 0..4 (T: one step, no input)
        rows = []
        columns = [1 << b for b in range(5)]
        table = _spread_table()
        for _ in range(n_words):
            spread = 0
            for b, col in enumerate(columns):
                spread |= (table[col & 255] | table[(col >> 8) & 255] << 40 | table[(col >> 16) & 255] << 80
                           | table[col >> 24] << 120) << b
            rows.append(bytes_to_words(spread.to_bytes(20, "big"))[2:])  # 150 bits -> 30 words
            columns = [((col & 0x1FFFFFF) << 5) ^ _POLY_TABLE[col >> 25] for col in columns]
        # column k of the rows, nearest the end last, is checksum bit 29 - k's mask
        self._masks = tuple(words_to_int(bytes(column[::-1])) for column in zip(*rows))[::-1]
        self._words = n_words


@lru_cache(maxsize=1)
def _spread_table() -> tuple[int, ...]:
    """For each byte, its bit j moved to bit 5j (built with the first masks, not at import:
    ~0.5 ms every process importing the wallets would pay)."""
    return tuple(sum(((byte >> j) & 1) << (5 * j) for j in range(8)) for byte in range(256))


_PARITY = _ParityChecksum()


def _polymod(values: bytes | list[int]) -> int:
    """BIP-173's checksum polynomial over words (each 0..31), by parities (`_ParityChecksum`)."""
    data = bytes(values)
    n = len(data)
    if n >= _ParityChecksum.MAX_WORDS:
        return _polymod_by_word(data)
    bits = (1 << 5 * n) | words_to_int(data)  # the leading 1 is the checksum's start value
    chk = 0
    for i, mask in enumerate(_PARITY.masks_for(n + 1)):
        chk |= ((mask & bits).bit_count() & 1) << i
    return chk


def _polymod_by_word(values: bytes | list[int]) -> int:
    """One word per step, as BIP-173 writes it: the reference the tests hold `_polymod` to."""
    chk = 1
    for v in values:
        chk = ((chk & 0x1FFFFFF) << 5) ^ v ^ _POLY_TABLE[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def decode(text: str) -> tuple[str, bytes]:
    """`hrp1data` -> (hrp, data words without the checksum, one word per byte). Raises Bech32Error."""
    if not _PRINTABLE.fullmatch(text):
        raise Bech32Error("character outside the printable ASCII range")
    lower = text.lower()
    if lower != text and text.upper() != text:
        raise Bech32Error("mixed upper and lower case")
    pos = lower.rfind("1")
    if pos < 1:
        raise Bech32Error("no human-readable part before the '1' separator")
    if pos + 1 + CHECKSUM_WORDS > len(lower):
        raise Bech32Error("too short for a checksum")
    hrp = lower[:pos]
    data = lower[pos + 1:].encode("ascii")
    stray = data.translate(None, _CHARSET_BYTES)
    if stray:
        raise Bech32Error(f"character {chr(stray[0])!r} is not in the bech32 alphabet")
    words = data.translate(_CHAR_TO_WORD)
    if _polymod(bytes(_hrp_expand(hrp)) + words) != 1:
        raise Bech32Error("bad checksum")
    return hrp, words[:-CHECKSUM_WORDS]


def encode(hrp: str, words: bytes | list[int]) -> str:
    """(hrp, data words) -> `hrp1data` with its checksum, lowercase."""
    data = bytes(words)
    poly = _polymod(bytes(_hrp_expand(hrp)) + data + bytes(CHECKSUM_WORDS)) ^ 1
    checksum = bytes((poly >> 5 * (5 - i)) & 31 for i in range(CHECKSUM_WORDS))
    return hrp + "1" + (data + checksum).translate(_WORD_TO_CHAR).decode("ascii")


def words_to_int(words: bytes) -> int:
    """Big-endian: the first word holds the most significant 5 bits (0 for no words)."""
    return int(words.translate(_WORD_TO_DIGIT), 32) if words else 0


def words_to_bytes(words: bytes) -> bytes:
    """The words' bits as bytes, dropping the last partial byte (BOLT11's zero padding)."""
    nbits = 5 * len(words)
    nbytes = nbits // 8
    return (words_to_int(words) >> (nbits - 8 * nbytes)).to_bytes(nbytes, "big")


def words_to_padded_bytes(words: bytes) -> bytes:
    """The words' bits as bytes, zero-padding the last byte (what BOLT11 signs)."""
    nbits = 5 * len(words)
    nbytes = -(-nbits // 8)
    return (words_to_int(words) << (8 * nbytes - nbits)).to_bytes(nbytes, "big")


def int_to_words(value: int, length: int | None = None) -> bytes:
    """A non-negative int as big-endian words: `length` of them, or as few as hold it (at least one)."""
    if length is None:
        length = max(1, -(-value.bit_length() // 5))
    return bytes((value >> 5 * (length - 1 - i)) & 31 for i in range(length))


def bytes_to_words(data: bytes) -> bytes:
    """Bytes as words, the last word zero-padded on the right (RFC 4648 base32's grouping).

    Why not `base64.b32encode`: on Python 3.11 it is a Python loop (7 us for 32 bytes, 18 us
    for a memo); here the bytes become one integer whose 5-bit groups are moved apart into
    bytes by log2(words) shifts of whole halves (`_spread_steps`), all in C."""
    n = -(-8 * len(data) // 5)
    if n == 0:
        return b""
    x = int.from_bytes(data, "big") << (5 * n - 8 * len(data))
    for shift, mask in _spread_steps(1 << max(n - 1, 1).bit_length()):
        moving = x & mask
        x ^= moving ^ (moving << shift)
    return x.to_bytes(n, "big")


def bytes_to_words_b32(data: bytes) -> bytes:
    """The same by RFC 4648 base32 in the standard library: the reference the tests hold
    `bytes_to_words` to."""
    return base64.b32encode(data).rstrip(b"=").translate(_B32_TO_WORD)


@lru_cache(maxsize=None)
def _spread_steps(size: int) -> tuple[tuple[int, int], ...]:
    """(shift, mask) steps that move word i (counted from the low end) from bit 5i to bit 8i,
    for up to `size` words (a power of two, at least 2).

    With the words in blocks of B (`size` at first), word i sits at 8B*(i // B) + 5*(i % B);
    moving each block's upper half up by 3B/2 bits halves B. Cached per power of two: about
    11 sizes cover any invoice field."""
    steps = []
    block = size
    while block >= 2:
        half_bits = 5 * block // 2
        lane = ((1 << half_bits) - 1) << half_bits
        mask = 0
        for start in range(0, 8 * size, 8 * block):
            mask |= lane << start
        steps.append((3 * block // 2, mask))
        block //= 2
    return tuple(steps)
