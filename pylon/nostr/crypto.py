"""The one entry point for "encrypt to / decrypt from a peer": NIP-44 v2 out, both in.

NIP-90 providers in the wild answer with NIP-44 v2 even when the request used NIP-04, so
incoming payloads are told apart by shape: NIP-04 payloads contain "?iv=" (never part of
base64), everything else is treated as NIP-44 v2. Conversation keys (an ECDH plus an HKDF)
are cached per (our pubkey, peer) in a bounded LRU, since a job exchanges several messages.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from pylon.nostr import nip04, nip44
from pylon.nostr.keys import Keys, normalize_pubkey

_CACHE_SIZE = 4096
_lock = threading.Lock()
_nip44_keys: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_nip04_keys: OrderedDict[tuple[str, str], bytes] = OrderedDict()


def _cached(cache: OrderedDict[tuple[str, str], bytes], keys: Keys, peer: str, make: Callable[[], bytes]) -> bytes:
    # Keyed by our x-only public key: the only secrets sharing it are d and n-d, whose ECDH
    # results share the same x coordinate, so the cached key is the same for both.
    slot = (keys.public_key, peer)
    with _lock:
        value = cache.get(slot)
        if value is not None:
            cache.move_to_end(slot)
            return value
    value = make()
    with _lock:
        cache[slot] = value
        cache.move_to_end(slot)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return value


def nip44_conversation_key(keys: Keys, peer_pubkey_hex: str) -> bytes:
    """Cached NIP-44 v2 conversation key between `keys` and a peer (hex or npub)."""
    peer = normalize_pubkey(peer_pubkey_hex)
    return _cached(_nip44_keys, keys, peer, lambda: nip44.conversation_key_for(keys, peer))


def _nip04_shared(keys: Keys, peer: str) -> bytes:
    return _cached(_nip04_keys, keys, peer, lambda: keys.ecdh_x(peer))


def encrypt_to(keys: Keys, peer_pubkey_hex: str, plaintext: str) -> str:
    """NIP-44 v2 payload of `plaintext` for the peer."""
    return nip44.encrypt(plaintext, nip44_conversation_key(keys, peer_pubkey_hex))


def encrypt_nip04_to(keys: Keys, peer_pubkey_hex: str, plaintext: str) -> str:
    """Legacy NIP-04 payload of `plaintext` for the peer (NWC's answers to NIP-04 requests and
    its notifications' 23196 twin), with the cached shared secret: an ECDH is ~60 us."""
    return nip04.encrypt_with_key(_nip04_shared(keys, normalize_pubkey(peer_pubkey_hex)), plaintext)


def decrypt_from(keys: Keys, peer_pubkey_hex: str, payload: str) -> str:
    """Decrypt a NIP-44 v2 or NIP-04 payload exchanged with the peer.

    Raises DecryptionError (or InvalidKey for a bad peer key) on failure.
    """
    peer = normalize_pubkey(peer_pubkey_hex)
    if isinstance(payload, str) and "?iv=" in payload:
        return nip04.decrypt_with_key(_nip04_shared(keys, peer), payload)
    return nip44.decrypt(payload, nip44_conversation_key(keys, peer))


def cache_clear() -> None:
    """Forget every cached conversation key (tests, key rotation)."""
    with _lock:
        _nip44_keys.clear()
        _nip04_keys.clear()


def cache_size() -> int:
    with _lock:
        return len(_nip44_keys) + len(_nip04_keys)
