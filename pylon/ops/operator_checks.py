"""`pylon doctor`'s warnings for someone about to run a provider for money (issue 18).

Each is a WARN (it works, but is probably not what was meant), never a failure:

* a dev wallet (`dev://`, a local SQLite ledger: play money) with a relay that is not on this
  machine: customers on a public relay would "pay" invoices nobody can settle for real;
* a wallet configured but no price: `pylon serve` would serve every job for free;
* a config file holding a secret (a wallet URI, a backend API key) that others can read.
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


_LOCAL_NAMES = {"localhost", "ip6-localhost", "host.docker.internal"}


def is_local_relay(url: str) -> bool:
    """ws://127.0.0.1, ws://localhost, private network addresses: not the public internet."""
    host = (urlsplit(url).hostname or "").lower()
    if host in _LOCAL_NAMES or host.endswith(".local") or "." not in host and ":" not in host:
        return True  # single-label names: a docker service ("relay") or the LAN
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _has_secret(settings: Any) -> bool:
    if settings.wallet or settings.backend_api_key:
        return True
    return any(getattr(m, "backend_api_key", None) for m in settings.models)


@dataclass(slots=True)
class OperatorWarning:
    """One warning: what it is about, the doctor step, what is wrong, how to fix it."""

    target: str
    step: str
    detail: str
    fix: str


def operator_warnings(settings: Any, config_file: Path) -> list[OperatorWarning]:
    found: list[OperatorWarning] = []
    wallet = settings.wallet or ""
    public = [u for u in settings.relays if not is_local_relay(u)]
    if wallet.startswith("dev://") and public:
        found.append(OperatorWarning(
            ", ".join(public), "wallet",
            "a dev wallet (play money, a local ledger) with a public relay: customers there cannot pay it",
            fix="use a real wallet (lnbits:// or nostr+walletconnect://) or a local relay"))
    priced = settings.price_msat > 0 or settings.price_per_1k_tokens_msat > 0 or any(
        (getattr(m, "price_msat", None) or 0) > 0 for m in settings.models)
    if wallet and not priced and not settings.free:
        found.append(OperatorWarning(
            "price_msat", "price",
            "a wallet is configured but the price is 0: `pylon serve` would serve every job for free",
            fix="`pylon config set price_msat N` (and/or price_per_1k_tokens_msat), or set free = true"))
    try:
        mode = config_file.stat().st_mode
    except OSError:
        return found
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and _has_secret(settings) and _file_names_secret(config_file):
        found.append(OperatorWarning(
            str(config_file), "file mode",
            f"{config_file.name} holds a secret and is readable by others (mode {stat.S_IMODE(mode):04o})",
            fix=f"chmod 600 {config_file}"))
    return found


def _file_names_secret(path: Path) -> bool:
    """The secret is in this file (not only in the environment or a flag)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return any(line.split("=", 1)[0].strip() in ("wallet", "backend_api_key")
               for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))


__all__ = ["operator_warnings", "is_local_relay"]
