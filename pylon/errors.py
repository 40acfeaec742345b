"""Every error a Pylon user can meet, in one tree; each says what happened and what to do.

This module is a leaf: it imports nothing of ours, so every layer (nostr, relay, jobs,
customer, provider, wallet, nexus_relay, cli) can raise these. Lower-layer errors
(websockets, sqlite3, coincurve, bolt11, OSError on ports and files) are caught where a user
can meet them and raised again as one of these, with the cause chained.

    PylonError                      1  anything else we expected (rare)
    ├── ConfigError                 2  flags, config file, environment, a wallet URI
    │   └── ListenError             2  a port to listen on is in use or not allowed
    ├── RelayError                  3  relays unreachable, or they refused what we sent
    │   ├── PublishError               (pylon.relay.pool) fewer relays accepted than needed
    │   └── SubscriptionClosed         (pylon.relay.pool) every relay closed a subscription
    ├── JobError                    4  a job did not produce an answer
    │   ├── NoProviderAnswered         nobody answered before the timeout
    │   │   └── ProviderUnavailable    the targeted provider withdrew (or let expire) its announcement
    │   ├── JobTimeout                 providers answered, no result before the timeout
    │   ├── ProviderError              the provider(s) reported an `error`
    │   ├── PaidNoResult               (pylon.customer.payments) paid, no result; receipt kept
    │   ├── JobParseError              (pylon.jobs.nip90) a job event is malformed
    │   ├── AnnouncementParseError     (pylon.jobs.nip89) a NIP-89 announcement is malformed
    │   └── JobCancelled          130  we cancelled it (Ctrl-C, aclose()); kind 5 published
    ├── PaymentError                5  money did not move as asked; nothing paid twice
    │   ├── PaymentRefused             we refused to pay (`reason`: over the bid, cap, budget…)
    │   ├── LedgerError                (pylon.customer.ledger) the receipts ledger failed
    │   └── WalletError             5  the wallet failed (wallet.errors: InsufficientBalance,
    │                                  PaymentFailed, Unauthorized, WalletUnreachable, …)
    ├── BackendError                6  the OpenAI-compatible backend is down or said no
    │                                  (pylon.provider.backends.errors, VllmStartError)
    ├── StorageError                7  a file or database cannot be read or written, or is corrupt
    └── NostrError                  8  a key, event, message or ciphertext is invalid
                                       (pylon.nostr.errors: InvalidKey, InvalidEvent,
                                       InvalidMessage, DecryptionError)

Exit codes are stable: scripts may rely on them. Besides these the CLI exits 2 on a usage
error (a flag it cannot parse), 70 on a bug (an exception that is not a PylonError: the
traceback goes to a file, named on stderr), 130 on Ctrl-C and 141 when the reader of its
output left early. docs/ERRORS.md has the table.

Each error may carry a `hint` (what the user can do about it); `str(error)` is the message
followed by "; " and the hint, and the CLI prints the hint on its own line.
"""

from __future__ import annotations

import errno
from typing import ClassVar

__all__ = [
    "PylonError", "ConfigError", "ListenError", "RelayError", "JobError", "NoProviderAnswered", "JobTimeout",
    "ProviderUnavailable", "ProviderError", "JobCancelled", "PaymentError", "PaymentRefused", "WalletError", "BackendError",
    "StorageError", "NostrError", "listen_error", "EXIT_USAGE", "EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_TERMINATED",
]

EXIT_USAGE = 2
"""A command line the CLI cannot parse (click's own usage errors exit with it too)."""
EXIT_BUG = 70
"""An unexpected exception: a bug in Pylon (BSD sysexits' EX_SOFTWARE)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT), as shells report it."""
EXIT_TERMINATED = 143
"""SIGTERM (128 + 15): the command ended as Ctrl-C ends it (cli.common.run)."""


class PylonError(Exception):
    """Base for expected failures a user can cause or meet.

    `message` says what happened, `hint` (optional) what to do about it.
    """

    exit_code: int = 1
    hint: str = ""

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def parts(self) -> tuple[str, str]:
        """(what happened, what to do): the CLI's red line and its hint line."""
        message = str(self.args[0]) if self.args else ""
        return message or type(self).__name__, self.hint

    def __str__(self) -> str:
        message, hint = self.parts()
        return f"{message}; {hint}" if hint and hint not in message else message


# ------------------------------------------------------------------------- configuration
class ConfigError(PylonError):
    """The configuration (file, environment, flags) is invalid."""

    exit_code = 2


class ListenError(ConfigError):
    """We could not listen on a host and port: it is in use, not ours to bind, or not an address."""


def listen_error(what: str, host: str, port: int, exc: OSError, flag: str = "--port") -> ListenError:
    """The ListenError for the OSError binding `host:port` raised (`what` names the server,
    `flag` the option that picks its port)."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"{what} cannot listen on {where}: the port is in use",
                           hint=f"stop what uses it, or pick another port ({flag} 0 picks a free one)")
    if exc.errno == errno.EACCES:
        return ListenError(f"{what} cannot listen on {where}: permission denied",
                           hint="ports below 1024 need privileges; pick a port above 1024")
    if exc.errno == errno.EADDRNOTAVAIL or not isinstance(exc.errno, int) or exc.errno < 0:  # < 0: gaierror
        return ListenError(f"{what} cannot listen on {where}: {host} is not an address of this machine",
                           hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    return ListenError(f"{what} cannot listen on {where}: {exc.strerror or exc}")


# ------------------------------------------------------------------------- relays
class RelayError(PylonError):
    """Relays could not be reached or refused what we sent."""

    exit_code = 3


# ------------------------------------------------------------------------- jobs
class JobError(PylonError):
    """A job failed: no provider answered, a provider reported an error, or it timed out."""

    exit_code = 4


class NoProviderAnswered(JobError):
    """Nobody answered the job before the timeout (it was cancelled)."""


class ProviderUnavailable(NoProviderAnswered):
    """The targeted provider is known not to take jobs: it withdrew its NIP-89 announcement
    (a NIP-09 deletion) or the announcement expired; `provider` is its pubkey (hex)."""

    def __init__(self, message: str, provider: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.provider = provider


class JobTimeout(JobError):
    """Providers answered but no result came before the timeout (the job was cancelled)."""


class ProviderError(JobError):
    """The provider(s) reported an `error` for the job; `errors` maps provider -> message.

    `failed` names the providers whose error ended the job while they were at work on it (or
    were chosen or paid): only those make a failover re-send. The others only declined it
    (said `error` before doing anything), which re-sending to the same providers cannot fix.
    Default: every provider in `errors`."""

    def __init__(self, message: str, errors: dict[str, str] | None = None, *, hint: str | None = None,
                 failed: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.errors = dict(errors or {})
        self.failed = list(self.errors) if failed is None else list(failed)


class JobCancelled(JobError):
    """The job was cancelled by us (Ctrl-C, aclose()); a kind-5 cancellation was published."""

    exit_code = 130


# ------------------------------------------------------------------------- payments
class PaymentError(PylonError):
    """A payment was refused (by us or the wallet) or failed."""

    exit_code = 5


class PaymentRefused(PaymentError):
    """We refused to pay; nothing was paid.

    `reason` is a stable code (pylon.customer.invoice_check.REASONS: above_bid, above_max,
    above_budget, no_wallet, …), `detail` the specifics. Without an explicit `hint`, the hint
    for the reason comes from `hints`, which pylon.customer.invoice_check fills with the
    flags and config keys that raise each limit (this leaf module knows no flags).
    """

    hints: ClassVar[dict[str, str]] = {}

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"payment refused ({reason}): {message}; nothing was paid",
                         hint=hint if hint is not None else self.hints.get(reason, ""))
        self.reason = reason
        self.detail = message


class WalletError(PaymentError):
    """Base of every error a wallet raises (the leaves are in wallet.errors)."""


# ------------------------------------------------------------------------- backends
class BackendError(PylonError):
    """The OpenAI-compatible backend is unreachable or returned an error."""

    exit_code = 6


# ------------------------------------------------------------------------- files
class StorageError(PylonError):
    """A file or database (identity, config, ledger, job store, relay db) cannot be read or
    written, or is not what it should be (corrupt, not SQLite, a directory)."""

    exit_code = 7


# ------------------------------------------------------------------------- protocol
class NostrError(PylonError):
    """A key, event, message or ciphertext does not follow the Nostr protocol."""

    exit_code = 8
