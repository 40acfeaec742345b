"""BOLT11 decode/encode: wallet.bolt11_codec vs the `bolt11` package, in one run.

    .venv/bin/python bench/bolt11_codec.py [--rounds 200]

Decodes the same signed invoice (the shape a provider issues: p, s, d, x, c) with
  * ours: wallet.bolt11_codec (own bech32, int-based words, coincurve recovery), uncached
    (`_decode`: what a quote seen for the first time costs; `decode_bolt11` remembers recent
    strings), and, for comparison, as of 46a014d: the bech32 checksum word by word
    (`bech32._polymod_by_word`) and bytes to words by the standard library's base32
    (`bech32.bytes_to_words_b32`), both patched in inside a `with` block;
  * the package as installed (`bolt11.decode`, bit arrays built word by word);
  * the package with the word conversions this repository used to patch into it at import
    time (reproduced here inside a `with` block, restored afterwards) — the "before" figure;
and encodes with ours and with the package. Prints ms per call (median of 5 batches) and
ratios against the package measured in the same run. CPU-bound and single-threaded: figures
move with the machine's load, the ratios much less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bolt11  # noqa: E402
import bolt11.decode  # noqa: E402
import bolt11.encode  # noqa: E402
from bitstring import BitArray, Bits  # noqa: E402
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags  # noqa: E402

from wallet import bech32  # noqa: E402
from wallet.bolt11_codec import _decode, decode_bolt11, encode_bolt11  # noqa: E402

SECRET = "11" * 32
FIELDS = dict(network="regtest", amount_msat=18_000, payment_hash="ab" * 32, payment_secret="cd" * 32,
              memo="pylon job 4f1c2a9e0b7d3c5a6e8f1029384756abcdef0123456789abcdef0123456789ab "
                   "(tiny-model, up to 16 tokens)", expiry_s=600)


@contextmanager
def old_patched_package() -> Iterator[None]:
    """The package with the big-integer word conversions the old codec patched in at import time."""
    def u5_to_bits(words: list[int]) -> BitArray:
        value = 0
        for w in words:
            value = (value << 5) | w
        return BitArray(uint=value, length=5 * len(words)) if words else BitArray()

    def bits_to_u5(bits: Bits) -> list[int]:
        n, value = bits.len // 5, bits.uint if bits.len else 0
        return [(value >> (5 * (n - 1 - i))) & 31 for i in range(n)]

    # (`bolt11.decode` is the function the package exports; the modules are in sys.modules)
    with mock.patch.object(sys.modules["bolt11.decode"], "u5_to_bitarray", u5_to_bits), \
            mock.patch.object(sys.modules["bolt11.encode"], "bitarray_to_u5", bits_to_u5):
        yield


def package_encode() -> str:
    tags = Tags()
    tags.add(TagChar.payment_hash, FIELDS["payment_hash"])
    tags.add(TagChar.payment_secret, FIELDS["payment_secret"])
    tags.add(TagChar.description, FIELDS["memo"])
    tags.add(TagChar.expire_time, FIELDS["expiry_s"])
    tags.add(TagChar.min_final_cltv_expiry, 18)
    inv = Bolt11(currency="bcrt", date=int(time.time()), tags=tags, amount_msat=MilliSatoshi(FIELDS["amount_msat"]))
    return bolt11.encode(inv, SECRET)


def per_call_ms(fn: Callable[[], object], rounds: int) -> float:
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        batches.append((time.perf_counter() - start) / rounds * 1000)
    return statistics.median(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200, help="calls per batch for our codec (the package gets 1/20)")
    args = ap.parse_args()
    slow_rounds = max(2, args.rounds // 20)
    text = encode_bolt11(node_secret_hex=SECRET, **FIELDS)  # type: ignore[arg-type]
    assert decode_bolt11(text).payment_hash == bolt11.decode(text).payment_hash

    rows: list[tuple[str, float, float]] = []
    pkg_decode = per_call_ms(lambda: bolt11.decode(text), slow_rounds)
    with old_patched_package():
        patched_decode = per_call_ms(lambda: bolt11.decode(text), args.rounds // 4)
        patched_encode = per_call_ms(package_encode, args.rounds // 4)
    ours_decode = per_call_ms(lambda: _decode(text), args.rounds)
    pkg_encode = per_call_ms(package_encode, slow_rounds)
    ours_encode = per_call_ms(lambda: encode_bolt11(node_secret_hex=SECRET, **FIELDS), args.rounds)  # type: ignore[arg-type]
    with mock.patch.object(bech32, "_polymod", bech32._polymod_by_word), \
            mock.patch.object(bech32, "bytes_to_words", bech32.bytes_to_words_b32):
        loop_decode = per_call_ms(lambda: _decode(text), args.rounds)
        loop_encode = per_call_ms(lambda: encode_bolt11(node_secret_hex=SECRET, **FIELDS), args.rounds)  # type: ignore[arg-type]
    remembered = per_call_ms(lambda: decode_bolt11(text), args.rounds)
    rows += [("decode: bolt11 package", pkg_decode, pkg_decode),
             ("decode: package + old import-time patch (before)", patched_decode, pkg_decode),
             ("decode: ours as of 46a014d", loop_decode, pkg_decode),
             ("decode: ours (now)", ours_decode, pkg_decode),
             ("decode: ours, a string decoded before", remembered, pkg_decode),
             ("encode: bolt11 package", pkg_encode, pkg_encode),
             ("encode: package + old import-time patch (before)", patched_encode, pkg_encode),
             ("encode: ours as of 46a014d", loop_encode, pkg_encode),
             ("encode: ours (now)", ours_encode, pkg_encode)]
    print(f"invoice: {len(text)} chars; ms per call, median of 5 batches")
    print(f"{'path':52} {'ms/call':>9} {'x faster than package':>22}")
    for name, ms, base in rows:
        print(f"{name:52} {ms:9.3f} {base / ms:22.1f}")
    print(f"now vs before: decode {patched_decode / ours_decode:.1f}x faster, "
          f"encode {patched_encode / ours_encode:.1f}x faster")
    print(f"now vs 46a014d: decode x{ours_decode / loop_decode:.2f}, "
          f"encode x{ours_encode / loop_encode:.2f} (time per call)")


if __name__ == "__main__":
    main()
