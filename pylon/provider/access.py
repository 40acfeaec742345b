"""Which customers a provider serves (issue 18): `[provider] allow` / `deny` lists in config.toml.

An empty allow list serves everyone; a non-empty one serves only its keys. The deny list wins
over the allow list. Keys are npubs or hex; a wrong one is a ConfigError at start, not a silent
hole. A refused request gets `error` feedback (nothing is charged) and is recorded like any
refusal at intake (outcome `rejected` on /metrics).
"""

from __future__ import annotations

from typing import Iterable

from pylon.errors import ConfigError
from pylon.nostr.errors import InvalidKey
from pylon.nostr.keys import normalize_pubkey

NOT_ALLOWED = "this provider serves a private list of customers; your key is not on it (nothing was charged)"


def _keys(values: Iterable[str], what: str) -> frozenset[str]:
    out = set()
    for value in values:
        try:
            out.add(normalize_pubkey(value))
        except InvalidKey as exc:
            raise ConfigError(f"provider {what} list: {value!r} is not a public key (npub or hex): "
                              f"{exc.parts()[0]}") from None
    return frozenset(out)


class CustomerAccess:
    """Allow/deny lists checked at intake."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = _keys(allow, "allow")
        self.deny = _keys(deny, "deny")

    def refuse(self, customer: str) -> str | None:
        """Why `customer` (hex) is not served, or None."""
        if customer in self.deny or (self.allow and customer not in self.allow):
            return NOT_ALLOWED
        return None
