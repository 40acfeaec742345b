"""NIP-44 v2 against every official vector (paulmillr/nip44 nip44.vectors.json, sha256 checked),
the extended-length vectors from the spec text, and round trips with rust-nostr (nostr-sdk)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import nostr_sdk
import pytest

from pylon.nostr import nip44
from pylon.nostr.errors import DecryptionError, InvalidKey
from pylon.nostr.keys import Keys

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "nip44.vectors.json"
# The checksum the NIP-44 spec publishes for the vectors file.
VECTORS_SHA256 = "269ed0f69e4c192512cc779e78c555090cebc7c785b609e338a62afc3ce25040"
V = json.loads(VECTORS_PATH.read_text())["v2"]


def _ids(items, key="note"):
    return [str(i) + ":" + str(item.get(key, ""))[:30] for i, item in enumerate(items)]


def test_vectors_file_is_the_official_one():
    assert hashlib.sha256(VECTORS_PATH.read_bytes()).hexdigest() == VECTORS_SHA256


def test_vector_sections_are_all_present():
    assert set(V["valid"]) == {
        "get_conversation_key", "get_message_keys", "calc_padded_len",
        "encrypt_decrypt", "encrypt_decrypt_long_msg",
    }
    assert set(V["invalid"]) == {"encrypt_msg_lengths", "get_conversation_key", "decrypt"}


# ------------------------------------------------------------------------------ valid
@pytest.mark.parametrize("vec", V["valid"]["get_conversation_key"], ids=_ids(V["valid"]["get_conversation_key"]))
def test_valid_get_conversation_key(vec):
    assert nip44.conversation_key(vec["sec1"], vec["pub2"]).hex() == vec["conversation_key"]


def test_valid_get_message_keys():
    section = V["valid"]["get_message_keys"]
    conv = bytes.fromhex(section["conversation_key"])
    assert len(section["keys"]) > 0
    for vec in section["keys"]:
        chacha_key, chacha_nonce, hmac_key = nip44.message_keys(conv, bytes.fromhex(vec["nonce"]))
        assert chacha_key.hex() == vec["chacha_key"]
        assert chacha_nonce.hex() == vec["chacha_nonce"]
        assert hmac_key.hex() == vec["hmac_key"]


@pytest.mark.parametrize("unpadded,padded", V["valid"]["calc_padded_len"])
def test_valid_calc_padded_len(unpadded, padded):
    assert nip44.calc_padded_len(unpadded) == padded


@pytest.mark.parametrize("vec", V["valid"]["encrypt_decrypt"], ids=_ids(V["valid"]["encrypt_decrypt"], "plaintext"))
def test_valid_encrypt_decrypt(vec):
    pub2 = Keys.from_hex(vec["sec2"]).public_key
    conv = nip44.conversation_key(vec["sec1"], pub2)
    assert conv.hex() == vec["conversation_key"]
    payload = nip44.encrypt(vec["plaintext"], conv, bytes.fromhex(vec["nonce"]))
    assert payload == vec["payload"]
    pub1 = Keys.from_hex(vec["sec1"]).public_key
    conv_back = nip44.conversation_key(vec["sec2"], pub1)
    assert conv_back.hex() == vec["conversation_key"]
    assert nip44.decrypt(payload, conv_back) == vec["plaintext"]


@pytest.mark.parametrize("vec", V["valid"]["encrypt_decrypt_long_msg"], ids=lambda v: f"{v['repeat']}x")
def test_valid_encrypt_decrypt_long_msg(vec):
    plaintext = vec["pattern"] * vec["repeat"]
    assert hashlib.sha256(plaintext.encode()).hexdigest() == vec["plaintext_sha256"]
    conv = bytes.fromhex(vec["conversation_key"])
    payload = nip44.encrypt(plaintext, conv, bytes.fromhex(vec["nonce"]))
    assert hashlib.sha256(payload.encode()).hexdigest() == vec["payload_sha256"]
    assert nip44.decrypt(payload, conv) == plaintext


# ----------------------------------------------------------------------------- invalid
@pytest.mark.parametrize("length", V["invalid"]["encrypt_msg_lengths"])
def test_invalid_encrypt_msg_lengths(length):
    conv = bytes(range(32))
    with pytest.raises(DecryptionError, match="plaintext length"):
        nip44.encrypt("a" * length, conv, bytes(32))


@pytest.mark.parametrize("vec", V["invalid"]["get_conversation_key"], ids=_ids(V["invalid"]["get_conversation_key"]))
def test_invalid_get_conversation_key(vec):
    with pytest.raises(InvalidKey):
        nip44.conversation_key(vec["sec1"], vec["pub2"])


@pytest.mark.parametrize("vec", V["invalid"]["decrypt"], ids=_ids(V["invalid"]["decrypt"]))
def test_invalid_decrypt(vec):
    with pytest.raises(DecryptionError):
        nip44.decrypt(vec["payload"], bytes.fromhex(vec["conversation_key"]))


# -------------------------------------------------- extended (>= 65536 byte) plaintexts
# From the "Extended length prefix test vectors" table of nostr-protocol/nips 44.md.
EXT_CONV = bytes.fromhex("c41c775356fd92eadc63ff5a0dc1da211b268cbea22316767095b2871ea1412d")
EXT_NONCE = bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000001")
EXTENDED = [
    (65535, 65536, "6e1bebca6a8229364a162a72ef064826c4cd7457bf54f190ef782bd9deff3e42",
     "6d8c2810d1e870fbaa1f0a0937126cca837a15f9260e27060c331d70a3c0bc84"),
    (65536, 65536, "bf718b6f653bebc184e1479f1935b8da974d701b893afcf49e701f3e2f9f9c5a",
     "b7b4edb36ba92e267d322d56d9aebc22e7fa96ff52e3c12adc07f07a43cbc616"),
    (65537, 81920, "008ffc88d3c96a9f307524eb361e47c5222a887fc45fa0c1fb8d429c5c23b430",
     "eeb7c7c5373894ea2c1547cfd3ccb15d5a0b2d619da852e5c79df792dcc9e435"),
]


@pytest.mark.parametrize("length,padded_len,pt_sha,payload_sha", EXTENDED)
def test_extended_length_vectors(length, padded_len, pt_sha, payload_sha):
    plaintext = "a" * length
    assert hashlib.sha256(plaintext.encode()).hexdigest() == pt_sha
    assert nip44.calc_padded_len(length) == padded_len
    payload = nip44.encrypt(plaintext, EXT_CONV, EXT_NONCE, extended=True)
    assert hashlib.sha256(payload.encode()).hexdigest() == payload_sha
    assert nip44.decrypt(payload, EXT_CONV) == plaintext
    prefix = 2 if length < 65536 else 6
    assert len(base64.b64decode(payload)) == 1 + 32 + prefix + padded_len + 32


def test_extended_prefix_with_small_length_is_refused():
    # A 6-byte prefix announcing a length below 65536 must not decode (the spec's unpad check).
    conv = bytes(range(32))
    nonce = bytes(32)
    ck, cn, hk = nip44.message_keys(conv, nonce)
    padded = b"\x00\x00" + (5).to_bytes(4, "big") + b"hello" + bytes(32 - 5)
    padded = padded[: 6 + 32] if len(padded) > 38 else padded + bytes(38 - len(padded))
    ct = nip44._chacha20(ck, cn, padded)
    mac = nip44._hmac_aad(hk, ct, nonce)
    payload = base64.b64encode(b"\x02" + nonce + ct + mac).decode()
    with pytest.raises(DecryptionError, match="padding"):
        nip44.decrypt(payload, conv)


# ------------------------------------------------------------------ behaviour checks
def test_random_nonce_differs_and_round_trips():
    a, b = Keys.generate(), Keys.generate()
    conv = nip44.conversation_key(a.secret_hex, b.public_key)
    assert conv == nip44.conversation_key(b.secret_hex, a.public_key)
    p1, p2 = nip44.encrypt("hi ☕", conv), nip44.encrypt("hi ☕", conv)
    assert p1 != p2
    assert nip44.decrypt(p1, conv) == nip44.decrypt(p2, conv) == "hi ☕"


def test_tampered_payload_fails_mac():
    conv = bytes(range(32))
    raw = bytearray(base64.b64decode(nip44.encrypt("secret message", conv)))
    raw[40] ^= 1
    with pytest.raises(DecryptionError, match="MAC"):
        nip44.decrypt(base64.b64encode(bytes(raw)).decode(), conv)


@pytest.mark.parametrize("payload", ["", "#abc", "A" * 131, "!" * 200, "AgAA" * 40 + "="])
def test_garbage_payloads_raise_typed_error(payload):
    with pytest.raises(DecryptionError):
        nip44.decrypt(payload, bytes(32))


def test_bad_key_lengths():
    with pytest.raises(DecryptionError):
        nip44.message_keys(bytes(31), bytes(32))
    with pytest.raises(DecryptionError):
        nip44.message_keys(bytes(32), bytes(33))
    with pytest.raises(DecryptionError):
        nip44.encrypt("x", bytes(32), bytes(31))


# ------------------------------------------------------------ interop with rust-nostr
def _sdk_keys(keys: Keys):
    return nostr_sdk.SecretKey.parse(keys.secret_hex), nostr_sdk.PublicKey.parse(keys.public_key)


# nostr-sdk 0.45 refuses to *encrypt* more than 65,408 bytes, so the long case stays below that.
@pytest.mark.parametrize("text", ["hello", "ünïcödé ☕ 🦄", "x" * 65000, "line\nbreak\u2028\x00"])
def test_nostr_sdk_decrypts_ours_and_we_decrypt_theirs(text):
    alice, bob = Keys.generate(), Keys.generate()
    alice_sk, alice_pk = _sdk_keys(alice)
    bob_sk, bob_pk = _sdk_keys(bob)
    ours = nip44.encrypt(text, nip44.conversation_key(alice.secret_hex, bob.public_key))
    assert nostr_sdk.nip44_decrypt(bob_sk, alice_pk, ours) == text
    theirs = nostr_sdk.nip44_encrypt(bob_sk, alice_pk, text, nostr_sdk.Nip44Version.V2)
    assert nip44.decrypt(theirs, nip44.conversation_key(alice.secret_hex, bob.public_key)) == text


def test_nostr_sdk_decrypts_our_largest_classic_message():
    alice, bob = Keys.generate(), Keys.generate()
    bob_sk, _ = _sdk_keys(bob)
    _, alice_pk = _sdk_keys(alice)
    text = "y" * 65535
    ours = nip44.encrypt(text, nip44.conversation_key(alice.secret_hex, bob.public_key))
    assert nostr_sdk.nip44_decrypt(bob_sk, alice_pk, ours) == text
