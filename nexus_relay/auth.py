"""NIP-42 authentication checks: the signed kind-22242 event answering our challenge."""

from __future__ import annotations

from urllib.parse import urlsplit

from pylon.nostr import Event
from pylon.nostr.kinds import AUTH

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _endpoint(url: str) -> tuple[str, int, str] | None:
    """(host, port, path) of a ws/wss URL, normalised; None when unparseable."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    except ValueError:
        return None
    if not host:
        return None
    if host in _LOOPBACK:
        host = "loopback"
    return host, port, parts.path.rstrip("/")


def relay_url_matches(claimed: str, accepted: list[str]) -> bool:
    """Whether the `relay` tag names this relay (scheme, case, trailing slash, loopback alias ignored)."""
    want = _endpoint(claimed)
    if want is None:
        return False
    return any(_endpoint(url) == want for url in accepted if url)


def check_auth_event(event: Event, *, challenge: str, relay_urls: list[str], now: int, max_age: int) -> str | None:
    """None when `event` is a valid answer to `challenge`, else an OK message with its prefix."""
    if event.kind != AUTH:
        return f"invalid: AUTH needs a kind {AUTH} event"
    if abs(now - event.created_at) > max_age:
        return f"invalid: AUTH event created_at must be within {max_age} s of now"
    tags = {t[0]: t[1] for t in event.tags if len(t) >= 2}
    if tags.get("challenge") != challenge:
        return "invalid: AUTH challenge does not match"
    if not relay_url_matches(tags.get("relay", ""), relay_urls):
        return "invalid: AUTH relay tag does not name this relay"
    if not event.is_valid():
        return "invalid: AUTH event id or signature is wrong"
    return None
