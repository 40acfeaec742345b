"""Who the provider says it is (issue 18): name, about, picture and Lightning address in its NIP-89
announcement and in a kind-0 profile, and which relays it advertises.

Customers see a provider through its announcement (`pylon providers`) and Nostr clients through its
kind-0 profile; both carry the same fields, from config (`[provider] name/about/picture/lud16`).
A relay the provider is not connected to right now is not advertised: a customer sent there would
wait for nothing (all of them are listed while none is up, rather than none).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from pylon.jobs.nip89 import clean_profile
from pylon.nostr import kinds
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

__all__ = ["build_profile", "clean_profile", "live_relays"]  # clean_profile: pylon.jobs.nip89


def build_profile(keys: Keys, name: str, profile: Mapping[str, Any] | None = None) -> Event:
    """A kind-0 metadata event (NIP-01) for the provider's key."""
    content = {"name": name, "display_name": name, **clean_profile(profile)}
    return Event.build(keys, kinds.METADATA, json.dumps(content, ensure_ascii=False, separators=(",", ":")), [])


def live_relays(pool: Any) -> list[str]:
    """The pool's relays that are connected now (all of them when none is)."""
    urls = list(pool.urls)
    try:
        status = pool.status()
    except Exception:
        return urls
    up = [u for u in urls if status.get(u) == "connected"]
    return up or urls
