"""Who owns a pending payment intent: a lock file per live ledger, held while the process lives.

Several `pylon ask` processes may share one PYLON_HOME and one receipts ledger. Each one writes
'pending' intents before paying; a crash can leave such an intent behind, and the next start's
recovery settles it by asking the wallet. Recovery must never touch an intent whose process is
still alive: that process may be paying it right now, and "the wallet has no payment for this
hash yet" would be read as "failed" (then "receipt N is already paid; it cannot be marked
failed" when the live process records its payment).

So every Ledger that records an intent first takes a lease: a file `leases/<owner>.lock` beside
the ledger, locked with `flock(LOCK_EX)` for as long as the Ledger is open. The intent row
carries the owner name. The kernel drops a flock when its process dies (SIGKILL included), so:

* lock file missing, or `flock(LOCK_EX | LOCK_NB)` succeeds -> the owner is gone;
* `flock` would block -> the owner is alive (another process, or another Ledger in this one:
  flock locks belong to an open file, not to a process, unlike POSIX record locks).

Intents written before leases existed carry no owner; they are treated as orphaned, which is
what recovery always assumed. On platforms without `fcntl.flock` every owner reads as alive
except missing lock files (recovery then waits for a clean close).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LEASE_DIR = "leases"


class OwnerLease:
    """This process's (this Ledger's) claim on the intents it writes; released by `release()` or by death."""

    def __init__(self, ledger_path: Path) -> None:
        self.dir = ledger_path.parent / LEASE_DIR
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:16]}"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / f"{self.owner}.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: never contended

    def release(self) -> None:
        """Give up the lease (on a clean close): intents still pending become recoverable."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(fd)


def owner_alive(ledger_path: Path, owner: str | None, *, mine: str | None = None) -> bool:
    """True when the process (Ledger) that wrote an intent may still be working on it."""
    if not owner:
        return False  # written before leases: an orphan by definition
    if owner == mine:
        return True
    path = ledger_path.parent / LEASE_DIR / f"{owner}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: never guess "dead"
    try:
        if fcntl is None:  # pragma: no cover
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return True
        with contextlib.suppress(OSError):
            path.unlink()  # a dead owner's file: tidy it up (we hold its lock, nobody else will)
        return False
    finally:
        os.close(fd)
