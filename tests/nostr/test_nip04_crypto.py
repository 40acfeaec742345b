"""NIP-04 against pynostr and nostr-sdk, and crypto.encrypt_to/decrypt_from dispatch + cache."""

from __future__ import annotations

import base64

import nostr_sdk
import pytest
from pynostr.key import PrivateKey as PynostrKey

from pylon.nostr import crypto, nip04, nip44
from pylon.nostr.errors import DecryptionError, InvalidKey
from pylon.nostr.keys import Keys

TEXTS = ["hello", "ünïcödé ☕ 🦄", "", "x" * 5000, "16 bytes exactly"]


@pytest.mark.parametrize("text", TEXTS)
def test_nip04_round_trip_both_directions(text):
    a, b = Keys.generate(), Keys.generate()
    payload = nip04.encrypt(a, b.public_key, text)
    ct, sep, iv = payload.partition("?iv=")
    assert sep and len(base64.b64decode(iv)) == 16
    assert nip04.decrypt(b, a.public_key, payload) == text
    assert nip04.decrypt(a, b.public_key, payload) == text


@pytest.mark.parametrize("text", [t for t in TEXTS if t])
def test_nip04_cross_check_with_pynostr(text):
    a, b = Keys.generate(), Keys.generate()
    pa, pb = PynostrKey.from_hex(a.secret_hex), PynostrKey.from_hex(b.secret_hex)
    assert pb.decrypt_message(nip04.encrypt(a, b.public_key, text), a.public_key) == text
    assert nip04.decrypt(a, b.public_key, pb.encrypt_message(text, a.public_key)) == text
    assert pa.public_key.hex() == a.public_key


@pytest.mark.parametrize("text", [t for t in TEXTS if t])
def test_nip04_cross_check_with_nostr_sdk(text):
    a, b = Keys.generate(), Keys.generate()
    b_sk = nostr_sdk.SecretKey.parse(b.secret_hex)
    a_pk = nostr_sdk.PublicKey.parse(a.public_key)
    assert nostr_sdk.nip04_decrypt(b_sk, a_pk, nip04.encrypt(a, b.public_key, text)) == text
    assert nip04.decrypt(a, b.public_key, nostr_sdk.nip04_encrypt(b_sk, a_pk, text)) == text


def test_nip04_wrong_key_or_garbage_is_a_typed_error():
    a, b, c = Keys.generate(), Keys.generate(), Keys.generate()
    payload = nip04.encrypt(a, b.public_key, "attack at dawn, attack at dawn!!")
    outcomes = []
    for bad in [
        "no-iv-here", "!!!?iv=AAAAAAAAAAAAAAAAAAAAAA==", "AAAA?iv=AAAA",
        base64.b64encode(b"x" * 15).decode() + "?iv=" + base64.b64encode(bytes(16)).decode(),
    ]:
        with pytest.raises(DecryptionError):
            nip04.decrypt(b, a.public_key, bad)
    # NIP-04 has no MAC: the wrong key fails the padding check almost always, or yields garbage.
    try:
        outcomes.append(nip04.decrypt(c, a.public_key, payload))
    except DecryptionError:
        outcomes.append(None)
    assert outcomes[0] != "attack at dawn, attack at dawn!!"


def test_encrypt_to_is_nip44_and_decrypt_from_reads_both():
    crypto.cache_clear()
    a, b = Keys.generate(), Keys.generate()
    payload = crypto.encrypt_to(a, b.public_key, "job input")
    assert "?iv=" not in payload and base64.b64decode(payload)[0] == 2
    assert nip44.decrypt(payload, nip44.conversation_key(b.secret_hex, a.public_key)) == "job input"
    assert crypto.decrypt_from(b, a.public_key, payload) == "job input"
    legacy = nip04.encrypt(a, b.public_key, "legacy input")
    assert crypto.decrypt_from(b, a.public_key, legacy) == "legacy input"
    # npub accepted for the peer
    assert crypto.decrypt_from(b, a.npub, payload) == "job input"


def test_decrypt_from_nostr_sdk_payloads_of_both_kinds():
    a, b = Keys.generate(), Keys.generate()
    b_sk = nostr_sdk.SecretKey.parse(b.secret_hex)
    a_pk = nostr_sdk.PublicKey.parse(a.public_key)
    v2 = nostr_sdk.nip44_encrypt(b_sk, a_pk, "from rust v2", nostr_sdk.Nip44Version.V2)
    v1 = nostr_sdk.nip04_encrypt(b_sk, a_pk, "from rust v1")
    assert crypto.decrypt_from(a, b.public_key, v2) == "from rust v2"
    assert crypto.decrypt_from(a, b.public_key, v1) == "from rust v1"
    assert nostr_sdk.nip44_decrypt(b_sk, a_pk, crypto.encrypt_to(a, b.public_key, "to rust")) == "to rust"


def test_conversation_keys_are_cached_and_bounded(monkeypatch):
    crypto.cache_clear()
    calls = []
    real = nip44.conversation_key_for

    def counting(keys, peer):
        calls.append(peer)
        return real(keys, peer)

    monkeypatch.setattr(nip44, "conversation_key_for", counting)
    a, b = Keys.generate(), Keys.generate()
    for _ in range(5):
        crypto.decrypt_from(b, a.public_key, crypto.encrypt_to(a, b.public_key, "m"))
    assert len(calls) == 2  # one per direction (a->b, b->a), then cached
    monkeypatch.setattr(crypto, "_CACHE_SIZE", 3)
    for _ in range(6):
        crypto.encrypt_to(a, Keys.generate().public_key, "m")
    assert crypto.cache_size() <= 3


def test_decrypt_from_errors_are_typed():
    a, b = Keys.generate(), Keys.generate()
    with pytest.raises(DecryptionError):
        crypto.decrypt_from(a, b.public_key, "not a payload")
    with pytest.raises(DecryptionError):
        crypto.decrypt_from(a, b.public_key, crypto.encrypt_to(a, Keys.generate().public_key, "x"))
    with pytest.raises(InvalidKey):
        crypto.decrypt_from(a, "ff" * 32, "x")
    with pytest.raises(InvalidKey):
        crypto.encrypt_to(a, "nothex", "x")


def test_encrypt_nip04_to_is_read_by_nostr_sdk_and_uses_the_cached_secret(monkeypatch):
    a, b = Keys.generate(), Keys.generate()
    crypto.cache_clear()
    payload = crypto.encrypt_nip04_to(a, b.public_key, "twin notification")
    assert "?iv=" in payload
    sdk_b = nostr_sdk.Keys.parse(b.secret_hex)
    assert nostr_sdk.nip04_decrypt(sdk_b.secret_key(), nostr_sdk.PublicKey.parse(a.public_key), payload) == "twin notification"
    calls = []
    real = Keys.ecdh_x
    monkeypatch.setattr(Keys, "ecdh_x", lambda self, peer: calls.append(peer) or real(self, peer))
    for _ in range(3):
        assert crypto.decrypt_from(b, a.public_key, crypto.encrypt_nip04_to(a, b.public_key, "x")) == "x"
    assert calls == [a.public_key]  # a's secret with b was cached by the first call; b's once
