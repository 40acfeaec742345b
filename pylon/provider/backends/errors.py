"""Typed backend failures, so a provider can tell "the server is down" from "it said no".

Both derive from pylon.errors.BackendError: the CLI maps them to one line and exit code 6,
and a provider turns them into NIP-90 `error` feedback while it keeps running.
"""

from __future__ import annotations

from pylon.errors import BackendError


class BackendUnavailable(BackendError):
    """The backend could not be reached, dropped the connection, or timed out."""


class BackendRejected(BackendError):
    """The backend answered with an HTTP error; `message` is the server's own explanation."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"backend rejected the request (HTTP {status}): {message}")


class BackendProtocolError(BackendError):
    """The backend answered 2xx but with a body that is not an OpenAI-style response."""
