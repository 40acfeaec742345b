"""The user-facing error hierarchy: each says what happened and what to do.

The CLI maps every PylonError to one red line and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""


class PylonError(Exception):
    """Base for expected failures a user can cause or meet."""

    exit_code: int = 1


class ConfigError(PylonError):
    """The configuration (file, environment, flags) is invalid."""

    exit_code = 2


class NostrError(PylonError):
    """A key, event, message or ciphertext does not follow the Nostr protocol."""

    exit_code = 2


class RelayError(PylonError):
    """Relays could not be reached or refused what we sent."""

    exit_code = 3


class JobError(PylonError):
    """A job failed: no provider answered, a provider reported an error, or it timed out."""

    exit_code = 4


class PaymentError(PylonError):
    """A payment was refused (by us or the wallet) or failed."""

    exit_code = 5


class BackendError(PylonError):
    """The OpenAI-compatible backend is unreachable or returned an error."""

    exit_code = 6
