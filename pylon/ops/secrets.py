"""Where a wallet secret may come from, and a warning when it comes from the command line.

A wallet URI (NWC `secret=`, an LNbits admin key) passed as `--wallet URI` is in the
process's argument list: `ps`, /proc/PID/cmdline and shell history show it to every local
user. The safe ways are PYLON_WALLET (environment), `wallet = "..."` in PYLON_HOME/config.toml
(0600 like the rest of PYLON_HOME), or `--wallet-file PATH` (a file holding the URI). The
flag still works, with one line on stderr saying so. `dev://` URIs name a local test ledger
and hold no secret: no warning for them.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from pylon.errors import ConfigError

NO_SECRET_SCHEMES = ("dev://",)


def holds_secret(uri: str) -> bool:
    return not uri.startswith(NO_SECRET_SCHEMES)


def read_wallet_file(path: str | Path) -> str:
    """The URI in `path` (first non-empty line, stripped); ConfigError when unreadable or empty.

    A file others can read gets a warning: it protects the secret no better than the flag."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except OSError as exc:
        raise ConfigError(f"cannot read the wallet file {p}: {exc.strerror or exc}",
                          hint="--wallet-file takes a file that holds the wallet URI on one line") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the wallet file {p} is not text",
                          hint="--wallet-file takes a file that holds the wallet URI on one line") from None
    uri = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not uri:
        raise ConfigError(f"the wallet file {p} is empty", hint="put the wallet URI on its first line")
    if mode & 0o077 and holds_secret(uri):
        print(f"warning: {p} is readable by other users (mode {mode:o}); chmod 600 it", file=sys.stderr)
    return uri


def wallet_from_flags(wallet: str | None, wallet_file: str | Path | None) -> str | None:
    """The wallet URI the command line gives (None: fall back to PYLON_WALLET / config)."""
    if wallet and wallet_file:
        raise ConfigError("give --wallet or --wallet-file, not both")
    if wallet_file:
        return read_wallet_file(wallet_file)
    if wallet and holds_secret(wallet):
        print("warning: --wallet puts the wallet secret where other local users can see it (ps); "
              "prefer --wallet-file PATH, PYLON_WALLET or config.toml", file=sys.stderr)
    return wallet
