"""Keys: generation, hex/nsec/npub both ways (NIP-19 vectors, pynostr, nostr-sdk), key files."""

from __future__ import annotations

import os
import stat

import nostr_sdk
import pytest
from pynostr.key import PrivateKey as PynostrKey

from pylon.nostr import bech32
from pylon.nostr.errors import InvalidKey
from pylon.nostr.keys import Keys, normalize_pubkey, verify_schnorr, xonly_pubkey

# From NIP-19's examples.
NIP19_NPUB = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
NIP19_PUB_HEX = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
NIP19_NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
NIP19_SEC_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
CURVE_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_generate_gives_distinct_valid_keys():
    a, b = Keys.generate(), Keys.generate()
    assert a.secret_hex != b.secret_hex and a.public_key != b.public_key
    for k in (a, b):
        assert len(k.public_key) == 64 and k.public_key == k.public_key.lower()
        assert Keys.from_hex(k.secret_hex).public_key == k.public_key


def test_nip19_vectors():
    assert Keys.from_nsec(NIP19_NSEC).secret_hex == NIP19_SEC_HEX
    assert Keys.from_hex(NIP19_SEC_HEX).nsec == NIP19_NSEC
    assert normalize_pubkey(NIP19_NPUB) == NIP19_PUB_HEX
    assert bech32.encode("npub", bytes.fromhex(NIP19_PUB_HEX)) == NIP19_NPUB


@pytest.mark.parametrize("_", range(5))
def test_forms_agree_with_pynostr_and_nostr_sdk(_):
    k = Keys.generate()
    py = PynostrKey.from_hex(k.secret_hex)
    assert py.public_key.hex() == k.public_key
    assert py.bech32() == k.nsec and py.public_key.bech32() == k.npub
    sdk = nostr_sdk.Keys.parse(k.nsec)
    assert sdk.secret_key().to_hex() == k.secret_hex
    assert sdk.public_key().to_hex() == k.public_key and sdk.public_key().to_bech32() == k.npub
    assert Keys.parse(k.nsec).secret_hex == Keys.parse(k.secret_hex).secret_hex == k.secret_hex
    assert normalize_pubkey(k.npub) == normalize_pubkey(k.public_key.upper()) == k.public_key


def test_save_load_mode_0600(tmp_path):
    k = Keys.generate()
    path = tmp_path / "sub" / "identity.key"
    old_umask = os.umask(0)  # even with a permissive umask the file must be 0600
    try:
        k.save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keys.load(path).secret_hex == k.secret_hex
    path.write_text(k.nsec + "\n")
    assert Keys.load(path).public_key == k.public_key


def test_load_or_create(tmp_path):
    path = tmp_path / "id.key"
    first = Keys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keys.load_or_create(path).secret_hex == first.secret_hex


@pytest.mark.parametrize("bad", [
    "", "abc", "zz" * 32, "00" * 31, "00" * 33, "00" * 32, f"{CURVE_N:064x}", "ff" * 32,
])
def test_bad_secret_hex_raises_invalid_key(bad):
    with pytest.raises(InvalidKey):
        Keys.from_hex(bad)


def test_bad_bech32_inputs_raise_invalid_key():
    k = Keys.generate()
    broken = k.nsec[:-1] + ("q" if k.nsec[-1] != "q" else "p")
    for bad in [broken, k.npub, "nsec1", "nsec1qqqq", k.nsec.upper()[:-2] + "zz", 42]:
        with pytest.raises(InvalidKey):
            Keys.from_nsec(bad)  # type: ignore[arg-type]
    npub_typo = k.npub[:-1] + ("x" if k.npub[-1] != "x" else "y")  # always a changed last character
    for bad in [k.nsec, "npub1xyz", "ab" * 31, "gg" * 32, npub_typo]:
        with pytest.raises(InvalidKey):
            normalize_pubkey(bad)
    with pytest.raises(InvalidKey):
        Keys(b"\x01" * 31)


def test_off_curve_public_key_is_invalid():
    # x = 0 has no point on secp256k1
    with pytest.raises(InvalidKey):
        xonly_pubkey("00" * 32)
    with pytest.raises(InvalidKey):
        Keys.generate().ecdh_x("00" * 32)
    assert verify_schnorr("00" * 32, "00" * 64, bytes(32)) is False
    assert verify_schnorr(Keys.generate().public_key, "zz", bytes(32)) is False


def test_repr_and_str_hide_the_secret():
    k = Keys.generate()
    for text in (repr(k), str(k), f"{k}", repr([k])):
        assert k.secret_hex not in text and k.nsec not in text
        assert k.npub in text


def test_sign_verifies_with_other_libraries():
    k = Keys.generate()
    msg = bytes(range(32))
    sig = k.sign(msg)
    assert verify_schnorr(k.public_key, sig, msg)
    assert not verify_schnorr(k.public_key, sig, bytes(32))
    sdk_sig = nostr_sdk.Keys.parse(k.secret_hex).sign_schnorr(msg)
    assert verify_schnorr(k.public_key, sdk_sig, msg)


def test_ecdh_is_symmetric():
    a, b = Keys.generate(), Keys.generate()
    assert a.ecdh_x(b.public_key) == b.ecdh_x(a.public_key)
    assert PynostrKey.from_hex(a.secret_hex).compute_shared_secret(b.public_key) == a.ecdh_x(b.public_key)


def test_event_id_from_reads_hex_note_nevent_and_nostr_uris_as_nostr_sdk_writes_them():
    event_id = os.urandom(32).hex()
    sdk_id = nostr_sdk.EventId.parse(event_id)
    author = nostr_sdk.Keys.generate().public_key()
    with_relays = nostr_sdk.Nip19Event(sdk_id, author, nostr_sdk.Kind(5050), [nostr_sdk.RelayUrl.parse("wss://relay.example.com")])
    forms = [event_id, event_id.upper(), f"  {event_id}\n", sdk_id.to_bech32(), sdk_id.to_nostr_uri(),
             nostr_sdk.Nip19Event(sdk_id).to_bech32(), with_relays.to_bech32(), with_relays.to_nostr_uri()]
    for form in forms:
        assert bech32.event_id_from(form) == event_id, form


@pytest.mark.parametrize("bad", ["", "deadbeef", "g" * 64, "a" * 63, "note1qqqq", "nostr:", "npub1" + "q" * 58,
                                 bech32.encode("note", bytes(31)), bech32.encode("nevent", bytes([1, 3]) + b"wss"),
                                 bech32.encode("nevent", bytes([0, 32]) + bytes(10)), NIP19_NPUB])
def test_event_id_from_refuses_what_names_no_event(bad):
    assert bech32.event_id_from(bad) is None
