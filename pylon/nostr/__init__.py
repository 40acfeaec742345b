"""Nostr protocol core: keys, events, filters, wire messages, encryption. No I/O.

This package imports nothing else from the project (the leaf of the arrow graph).
"""

from pylon.nostr.errors import NostrError, InvalidEvent, InvalidKey, InvalidMessage, DecryptionError
from pylon.nostr.keys import Keys, PublicKeyCache
from pylon.nostr.event import Event, compute_event_id, serialize_for_id
from pylon.nostr.filters import Filter
from pylon.nostr import kinds

__all__ = [
    "NostrError", "InvalidEvent", "InvalidKey", "InvalidMessage", "DecryptionError",
    "Keys", "PublicKeyCache", "Event", "compute_event_id", "serialize_for_id", "Filter", "kinds",
]
