"""Wallet URIs: parse them, and redact the secrets in them before anything prints or logs.

Forms (see wallet/__init__.py for the full list):
  dev:///abs/path/ledger.sqlite?account=alice
  lnbits://<api key>@host:port?tls=0
  nostr+walletconnect://<wallet pubkey>?relay=wss://…&secret=<hex>
"""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from wallet.errors import WalletUriInvalid

#: Query parameters that carry secrets in any wallet URI we know.
SECRET_PARAMS = frozenset({"secret", "key", "adminkey", "inkey", "api_key", "apikey", "token", "password"})


def scheme_of(uri: str) -> str:
    """The lowercase scheme ("dev", "lnbits", "nostr+walletconnect"), or "" if none."""
    scheme, sep, _ = uri.partition("://")
    return scheme.lower() if sep else ""


def query_params(query: str, allowed: tuple[str, ...], what: str) -> dict[str, list[str]]:
    """A wallet URI's query, refusing a parameter that is not in `allowed` (WalletUriInvalid):
    for our own schemes, where a typo such as `?acount=` would otherwise be ignored (and a
    dev wallet would pay from its "default" account)."""
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = " and ".join(f"{name}=" for name in allowed)
        raise WalletUriInvalid(f"unknown parameter {unknown[0]!r} in {what} (it takes {takes})")
    return params


def redact_uri(uri: str) -> str:
    """The URI with user info and secret query values replaced by ***: safe to print and log.

    Hosts, paths, relays and accounts stay visible so users can tell wallets apart.
    Unparseable input yields "<scheme>://***" (or "***"), never the input itself."""
    if not isinstance(uri, str) or not scheme_of(uri):  # no scheme: nothing to tell apart, maybe a bare secret
        return "***"
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = parse_qsl(parts.query, keep_blank_values=True)
        redacted = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in query]
        out = f"{parts.scheme}://{netloc}{parts.path}"
        if redacted:
            out += "?" + urlencode(redacted, safe=":/")
        return out
    except Exception:
        scheme = scheme_of(uri) if isinstance(uri, str) else ""
        return f"{scheme}://***" if scheme else "***"
