"""Typed errors for the Nostr core; every one says what was wrong."""


class NostrError(Exception):
    """Base class for all protocol-level errors raised by pylon.nostr."""


class InvalidKey(NostrError):
    """A key (hex, nsec, npub) could not be parsed or is not on the curve."""


class InvalidEvent(NostrError):
    """An event is malformed, its id does not match its content, or its signature fails."""


class InvalidMessage(NostrError):
    """A NIP-01 wire message (either direction) is malformed."""


class DecryptionError(NostrError):
    """A NIP-04 / NIP-44 payload could not be decrypted or authenticated."""
