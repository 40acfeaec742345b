"""wallet.bolt11_codec against the `bolt11` package as the oracle.

Invoices encoded by the package (random fields, amounts, networks, optional tags, with and
without an `n` field) decode to the same fields with ours, and ours decode the same with the
package; tagged fields built at random (lengths, repeats, unknown letters) are accepted or
refused by both alike; anything malformed gives InvoiceInvalid, never another exception.
"""

from __future__ import annotations

import random
import subprocess
import sys

import bolt11 as pkg
import pytest
from bitstring import Bits
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from bolt11.models.features import Features
from coincurve import PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wallet import bech32
from wallet.base import CURRENCY_TO_NETWORK
from wallet.bolt11_codec import DecodedInvoice, decode_bolt11, decode_payable, encode_bolt11
from wallet.errors import AmountAboveMax, InvoiceExpired, InvoiceInvalid

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
secrets = st.integers(min_value=1, max_value=2**255).map(lambda n: f"{n:064x}")
currencies = st.sampled_from(sorted(CURRENCY_TO_NETWORK))
# msat amounts of every shape (whole BTC down to single msats); the package's shortener is
# wrong for multiples of 1000 BTC, so stay below that
amounts = st.one_of(st.none(), st.integers(min_value=1, max_value=10**14 - 1),
                    st.integers(min_value=1, max_value=99_999).map(lambda n: n * 10**8))


def _oracle_fields(text: str) -> dict:
    inv = pkg.decode(text)
    features = inv.features
    return {
        "payment_hash": inv.payment_hash,
        "amount_msat": int(inv.amount_msat) if inv.amount_msat is not None else None,
        "network": CURRENCY_TO_NETWORK[inv.currency],
        "payee": inv.payee,
        "created_at": inv.date,
        "expiry_s": inv.expiry,
        "description": inv.description,
        "payment_secret": inv.payment_secret,
        "description_hash": inv.description_hash,
        "min_final_cltv": inv.min_final_cltv_expiry,
        "features": features.data.uint if features is not None and features.data.len else 0,
    }


def _our_fields(d: DecodedInvoice) -> dict:
    return {k: getattr(d, k) for k in ("payment_hash", "amount_msat", "network", "payee", "created_at", "expiry_s",
                                       "description", "payment_secret", "description_hash", "min_final_cltv",
                                       "features")}


@st.composite
def package_invoices(draw: st.DrawFn) -> tuple[str, str]:
    """(bolt11 text encoded and signed by the package, node secret)."""
    secret = draw(secrets)
    tags = Tags()
    tags.add(TagChar.payment_hash, draw(hex32))
    tags.add(TagChar.payment_secret, draw(hex32))
    if draw(st.booleans()):
        tags.add(TagChar.description, draw(st.text(max_size=200)))
    else:
        tags.add(TagChar.description_hash, draw(hex32))
    if draw(st.booleans()):
        tags.add(TagChar.expire_time, draw(st.integers(min_value=1, max_value=2**40)))
    if draw(st.booleans()):
        tags.add(TagChar.min_final_cltv_expiry, draw(st.integers(min_value=1, max_value=2**20)))
    if draw(st.booleans()):
        bits = draw(st.integers(min_value=0, max_value=2**60 - 1))
        tags.add(TagChar.features, Features.from_bitstring(Bits(uint=bits, length=60)))
    if draw(st.booleans()):
        tags.add(TagChar.metadata, draw(st.binary(max_size=40)).hex())
    keep_payee = draw(st.booleans())
    if keep_payee:
        tags.add(TagChar.payee, PrivateKey(bytes.fromhex(secret)).public_key.format().hex())
    amount = draw(amounts)
    invoice = Bolt11(currency=draw(currencies), date=draw(st.integers(min_value=0, max_value=2**35 - 1)),
                     tags=tags, amount_msat=MilliSatoshi(amount) if amount else None)
    return pkg.encode(invoice, secret, keep_payee=keep_payee), secret


@SETTINGS
@given(package_invoices())
def test_package_encoded_invoices_decode_to_the_same_fields(case: tuple[str, str]) -> None:
    text, secret = case
    ours = decode_bolt11(text)
    assert _our_fields(ours) == _oracle_fields(text)
    assert ours.payee == PrivateKey(bytes.fromhex(secret)).public_key.format().hex()
    assert ours.bolt11 == text
    assert decode_bolt11("  LIGHTNING:" + text.upper() + "\n") == ours  # prefix, case and blanks


@SETTINGS
@given(secret=secrets, network=st.sampled_from(sorted(CURRENCY_TO_NETWORK.values())),
       amount=st.integers(min_value=1, max_value=10**14 - 1), payment_hash=hex32, payment_secret=hex32,
       memo=st.text(max_size=300), expiry=st.integers(min_value=1, max_value=2**32),
       created=st.integers(min_value=0, max_value=2**35 - 1), cltv=st.integers(min_value=1, max_value=5000))
def test_our_invoices_decode_the_same_with_the_package(secret: str, network: str, amount: int, payment_hash: str,
                                                       payment_secret: str, memo: str, expiry: int, created: int,
                                                       cltv: int) -> None:
    text = encode_bolt11(node_secret_hex=secret, network=network, amount_msat=amount, payment_hash=payment_hash,
                         payment_secret=payment_secret, memo=memo, expiry_s=expiry, created_at=created,
                         min_final_cltv=cltv)
    expected = {"payment_hash": payment_hash, "amount_msat": amount, "network": network,
                "payee": PrivateKey(bytes.fromhex(secret)).public_key.format().hex(), "created_at": created,
                "expiry_s": expiry, "description": memo, "payment_secret": payment_secret, "description_hash": None,
                "min_final_cltv": cltv, "features": 0}
    assert _oracle_fields(text) == expected
    assert _our_fields(decode_bolt11(text)) == expected


# -- random tagged fields, correctly signed: both decoders agree on accept/refuse and fields ----
field_types = st.sampled_from("psdhnxc9fvrm")  # the known letters plus a few the decoders skip


@st.composite
def signed_field_soups(draw: st.DrawFn) -> str:
    """A correctly signed invoice whose tagged fields are drawn at random: usually the required
    ones (p, s, d or h) somewhere among others of random letters, lengths and repeats."""
    secret = draw(secrets)
    key = PrivateKey(bytes.fromhex(secret))
    fields: list[bytes] = []
    for letter in "psd":
        if draw(st.integers(0, 9)):  # 90 %: present, at the right length
            value = draw(st.text(max_size=30)).encode() if letter == "d" else bytes.fromhex(draw(hex32))
            fields.append(_field(letter, bech32.bytes_to_words(value)))
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        letter = draw(field_types)
        length = draw(st.sampled_from([0, 1, 2, 7, 52, 53, 60]))
        if letter == "n" and length == 53 and draw(st.booleans()):
            data = bech32.bytes_to_words(key.public_key.format())
        elif letter == "d":
            data = bech32.bytes_to_words(draw(st.text(max_size=30)).encode())
        else:
            data = bytes(draw(st.lists(st.integers(0, 31), min_size=length, max_size=length)))
        if letter == "f" and (not data or data[0] == 19):
            continue  # the package fails on an empty fallback and skips type 19: not our concern
        fields.append(_field(letter, data))
    words = bech32.int_to_words(draw(st.integers(min_value=0, max_value=2**35 - 1)), 7)
    words += b"".join(draw(st.permutations(fields)))
    hrp = "ln" + draw(currencies) + draw(st.sampled_from(["", "1", "25u", "100n", "7m", "123450p"]))
    message = hrp.encode() + bech32.words_to_padded_bytes(words)
    return bech32.encode(hrp, words + bech32.bytes_to_words(key.sign_recoverable(message)))


def _field(letter: str, data: bytes) -> bytes:
    return bytes((bech32.CHARSET.index(letter), len(data) >> 5, len(data) & 31)) + data


@SETTINGS
@given(signed_field_soups())
def test_random_fields_accepted_and_refused_like_the_package(text: str) -> None:
    try:
        expected = _oracle_fields(text)
    except Exception:
        with pytest.raises(InvoiceInvalid):
            decode_bolt11(text)
    else:
        assert _our_fields(decode_bolt11(text)) == expected


# -- malformed input: InvoiceInvalid with one line, never another exception ----------------------
def _valid() -> str:
    return encode_bolt11(node_secret_hex="11" * 32, network="regtest", amount_msat=1234, payment_hash="ab" * 32,
                         payment_secret="cd" * 32, memo="job", expiry_s=600, created_at=1_700_000_000)


def _refused(text: object) -> str:
    with pytest.raises(InvoiceInvalid) as info:
        decode_bolt11(text)  # type: ignore[arg-type]
    message = str(info.value)
    assert message and "\n" not in message
    return message


@SETTINGS
@given(st.one_of(st.text(max_size=400), st.binary(max_size=50).map(lambda b: b.decode("latin-1"))))
def test_random_text_is_refused_cleanly(text: str) -> None:
    try:
        decode_bolt11(text)
    except InvoiceInvalid as exc:
        assert str(exc) and "\n" not in str(exc)


@SETTINGS
@given(st.data())
def test_mutated_invoices_are_refused_cleanly(data: st.DataObject) -> None:
    text = _valid()
    i = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    op = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
    ch = data.draw(st.sampled_from(bech32.CHARSET + "1bio"))
    mutated = {"replace": text[:i] + ch + text[i + 1:], "delete": text[:i] + text[i + 1:],
               "insert": text[:i] + ch + text[i:], "truncate": text[:i]}[op]
    if mutated == text:
        return
    try:
        decoded = decode_bolt11(mutated)
    except InvoiceInvalid as exc:
        assert str(exc) and "\n" not in str(exc)
    else:  # bech32 lets a mutation through only if it still checks out as a signed invoice
        assert decoded.payment_hash == "ab" * 32


def _resign(hrp: str, words: bytes, secret: str = "11" * 32) -> str:
    message = hrp.encode() + bech32.words_to_padded_bytes(words)
    return bech32.encode(hrp, words + bech32.bytes_to_words(PrivateKey(bytes.fromhex(secret)).sign_recoverable(message)))


@pytest.mark.parametrize("amount, refused", [("0", "zero"), ("01u", "leading zero"), ("15p", "whole number"),
                                             ("1x", "prefix"), ("", None), ("2500u", None), ("10p", None)])
def test_amount_rules(amount: str, refused: str | None) -> None:
    hrp, words = bech32.decode(_valid())
    text = _resign("lnbcrt" + amount, words[:-104])
    if refused is None:
        assert decode_bolt11(text).payment_hash == "ab" * 32
    else:
        assert refused in _refused(text)


def test_amount_multipliers() -> None:
    hrp, words = bech32.decode(_valid())
    for amount, msat in [("1", 100_000_000_000), ("2m", 200_000_000), ("3u", 300_000), ("4n", 400), ("50p", 5)]:
        assert decode_bolt11(_resign("lnbc" + amount, words[:-104])).amount_msat == msat


def test_network_prefixes() -> None:
    _hrp, words = bech32.decode(_valid())
    for currency, network in CURRENCY_TO_NETWORK.items():
        assert decode_bolt11(_resign(f"ln{currency}10n", words[:-104])).network == network
    assert "network prefix" in _refused(_resign("lnxy10n", words[:-104]))
    assert "prefix" in _refused(_resign("bc10n", words[:-104]))


def test_signature_must_match_the_payee_field() -> None:
    _hrp, words = bech32.decode(_valid())
    other = PrivateKey(b"\x22" * 32).public_key.format()
    n_field = bytes((bech32.CHARSET.index("n"), 1, 21)) + bech32.bytes_to_words(other)
    signed_by_11 = _resign("lnbcrt10n", words[:-104] + n_field)
    assert "payee" in _refused(signed_by_11)
    assert decode_bolt11(_resign("lnbcrt10n", words[:-104] + n_field, "22" * 32)).payee == other.hex()


def test_tampered_signature_or_recovery_id() -> None:
    hrp, words = bech32.decode(_valid())
    bad_recid = words[:-1] + bytes((31,))  # last word holds the recovery id's low bits
    _refused(bech32.encode(hrp, bad_recid))
    flipped = words[:-50] + bytes((words[-50] ^ 1,)) + words[-49:]
    try:  # another signature may recover another key; then the payee differs
        assert decode_bolt11(bech32.encode(hrp, flipped)).payee != decode_bolt11(_valid()).payee
    except InvoiceInvalid:
        pass


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("   ", "empty"), ("lnbc1", "bech32"), ("x" * 8000, "too long"),
    ("lnbc10n1" + "q" * 20, "bech32"), ("lnbc10n1pMiXeD", "bech32"), ("lnbc10n1\x00abcdefg", "bech32"),
])
def test_malformed_strings(text: str, why: str) -> None:
    assert why in _refused(text)


def test_missing_required_fields() -> None:
    ts = bech32.int_to_words(1_700_000_000, 7)
    field = _field
    p = field("p", bech32.bytes_to_words(b"\xab" * 32))
    s = field("s", bech32.bytes_to_words(b"\xcd" * 32))
    d = field("d", bech32.bytes_to_words(b"memo"))
    assert "payment hash" in _refused(_resign("lnbcrt10n", ts + s + d))
    assert "payment secret" in _refused(_resign("lnbcrt10n", ts + p + d))
    assert "description" in _refused(_resign("lnbcrt10n", ts + p + s))
    assert "too short" in _refused(bech32.encode("lnbcrt10n", ts + p))
    assert "truncated" in _refused(_resign("lnbcrt10n", ts + p + s + d + bytes((1,))))
    assert "longer" in _refused(_resign("lnbcrt10n", ts + p + s + d + bytes((1, 0, 9, 1))))
    assert "UTF-8" in _refused(_resign("lnbcrt10n", ts + p + s + field("d", bech32.bytes_to_words(b"\xff\xfe"))))
    assert decode_bolt11(_resign("lnbcrt10n", ts + p + s + d)).expiry_s == 3600


def test_decode_payable_refuses_before_money_moves() -> None:
    text = _valid()
    with pytest.raises(AmountAboveMax):
        decode_payable(text, max_msat=1233)
    with pytest.raises(InvoiceExpired):
        decode_payable(text, max_msat=2000)  # created in 2023 with a 600 s expiry
    hrp, words = bech32.decode(text)
    with pytest.raises(InvoiceInvalid, match="amountless"):
        decode_payable(_resign("lnbcrt", words[:-104]), max_msat=2000)


def test_encoder_refuses_bad_parameters() -> None:
    base = dict(node_secret_hex="11" * 32, network="regtest", amount_msat=1, payment_hash="ab" * 32,
                payment_secret="cd" * 32, memo="", expiry_s=60)
    for bad in ({"network": "mars"}, {"amount_msat": -1}, {"payment_hash": "zz"}, {"payment_secret": "ab"},
                {"expiry_s": 0}, {"memo": "x" * 700}):
        with pytest.raises(InvoiceInvalid):
            encode_bolt11(**{**base, **bad})  # type: ignore[arg-type]


def test_no_import_time_patching_of_the_package() -> None:
    """Importing the wallets neither loads nor patches `bolt11` (it is the tests' oracle only)."""
    code = ("import sys, wallet, wallet.bolt11_codec, wallet.dev, wallet.nwc, wallet.lnbits, pylon.customer.client;"
            "assert 'bolt11' not in sys.modules, 'bolt11 imported';"
            "import bolt11.decode, bolt11.bit_utils;"
            "assert sys.modules['bolt11.decode'].u5_to_bitarray is bolt11.bit_utils.u5_to_bitarray")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=700).map(lambda b: bytes(x & 31 for x in b)))
def test_parity_checksum_equals_bip173_one_word_step(words):
    """`_polymod` computes the checksum by parities; BIP-173's one-word loop is the reference."""
    assert bech32._polymod(words) == bech32._polymod_by_word(words)
    assert bech32._polymod(list(words)) == bech32._polymod_by_word(list(words))


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 511, 512, 1000, 2046, 2047, 2048, 2600])
def test_parity_checksum_at_the_edges_of_its_masks(n: int) -> None:
    """Lengths at the masks' growth steps and around MAX_WORDS (beyond it: the loop)."""
    rng = random.Random(n)
    for _ in range(3):
        words = bytes(rng.randrange(32) for _ in range(n))
        assert bech32._polymod(words) == bech32._polymod_by_word(words)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_bytes_to_words_is_the_bit_string_cut_in_fives(data):
    """base32's grouping is BOLT11's: the bits in order, five at a time, the last group zero-padded."""
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    assert bech32.bytes_to_words(data) == bytes(int(bits[i:i + 5], 2) for i in range(0, len(bits), 5))
    assert bech32.words_to_bytes(bech32.bytes_to_words(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_bytes_to_words_equals_rfc4648_base32(data):
    """`bytes_to_words` spreads the bits with shifts; the standard library's base32 is the reference."""
    assert bech32.bytes_to_words(data) == bech32.bytes_to_words_b32(data)
