"""Typed errors for the Nostr core; every one says what was wrong.

They derive from `pylon.errors.NostrError`, so the CLI reports them like any PylonError.
"""

from pylon.errors import NostrError

__all__ = ["NostrError", "InvalidKey", "InvalidEvent", "InvalidMessage", "DecryptionError"]


class InvalidKey(NostrError):
    """A key (hex, nsec, npub) could not be parsed or is not on the curve."""


class InvalidEvent(NostrError):
    """An event is malformed, its id does not match its content, or its signature fails."""


class InvalidMessage(NostrError):
    """A NIP-01 wire message (either direction) is malformed."""


class DecryptionError(NostrError):
    """A NIP-04 / NIP-44 payload could not be decrypted or authenticated."""
