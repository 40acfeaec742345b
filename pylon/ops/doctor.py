"""`pylon doctor`: check the configuration, each relay, the backend and the wallet, and say
what is wrong and how to fix it.

Why its own module, with raw websockets rather than the RelayPool: a diagnosis needs the
exact failure (refused, TLS, handshake rejected, OK false with which prefix, event never
delivered back), while the pool is built to hide transient failures behind reconnects.

Every check returns `Finding`s; nothing here prints. Secrets never enter a finding: wallet
URIs go through `wallet.redact_uri`, API keys are never read back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pylon.ops.config import Settings, load_settings, mask_secret
from pylon.ops.operator_checks import operator_warnings
from pylon.errors import ConfigError
from pylon.home import config_path, identity_path
from pylon.nostr import Event, Filter, Keys
from pylon.nostr.errors import InvalidMessage, NostrError
from pylon.nostr.messages import (
    ClientAuth,
    ClientClose,
    ClientEvent,
    ClientReq,
    RelayAuth,
    RelayClosed,
    RelayEose,
    RelayEvent,
    RelayNotice,
    RelayOk,
    parse_relay_message,
    split_prefix,
)

# An ephemeral kind (20000-29999: delivered to live subscribers, never stored), so the round
# trip leaves nothing behind on the relay. It also carries a NIP-40 expiration in case a
# relay stores ephemeral events anyway.
ROUND_TRIP_KIND = 20_777


class Level(str, Enum):
    OK = "ok"
    WARN = "warn"   # works, but something deserves attention; does not fail the run
    FAIL = "fail"
    SKIP = "skip"   # not checked (not configured, or an earlier step failed)


@dataclass(slots=True)
class Finding:
    """One line of the report: what was checked, the outcome, and how to fix a failure."""

    check: str                 # "config", "relay", "backend", "wallet"
    target: str                # what was checked (URL, file; secrets redacted)
    step: str                  # "load", "connect", "nip11", "round trip", "models", "balance"
    level: Level
    detail: str
    fix: str = ""
    ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = self.level.value
        return d


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level is Level.FAIL for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


# ---------------------------------------------------------------------- configuration
def check_config(overrides: dict[str, Any] | None = None) -> tuple[Settings, list[Finding]]:
    """Load the effective settings. On an invalid configuration, report it and go on with the
    defaults plus the flags, so the other checks still run."""
    findings: list[Finding] = []
    path = config_path()
    target = str(path) if path.exists() else f"{path} (absent: defaults, PYLON_* and flags)"
    try:
        settings = load_settings(overrides)
        findings.append(Finding("config", target, "load", Level.OK, "configuration is valid"))
    except ConfigError as exc:
        findings.append(Finding(
            "config", target, "load", Level.FAIL, str(exc),
            fix=f"correct the value in {path} or the PYLON_* variable named above; "
                "`pylon config show` prints what is in effect"))
        try:
            settings = Settings(**{k: v for k, v in (overrides or {}).items() if v not in (None, [])})
        except Exception:
            settings = Settings()
    for w in operator_warnings(settings, path):  # money-safety warnings for providers (operator_checks.py)
        findings.append(Finding("config", w.target, w.step, Level.WARN, w.detail, fix=w.fix))
    ident = identity_path()
    if ident.exists():
        try:
            keys = Keys.load(ident)
            findings.append(Finding("config", str(ident), "identity", Level.OK, f"identity {keys.npub}"))
        except (OSError, NostrError) as exc:
            findings.append(Finding("config", str(ident), "identity", Level.FAIL,
                                    f"identity file unreadable: {exc}",
                                    fix="restore it from a backup, or `pylon keys new --force` for a new one"))
    else:
        findings.append(Finding("config", str(ident), "identity", Level.WARN,
                                "no identity yet (one is created on first use)",
                                fix="`pylon keys new` to create it now"))
    return settings, findings


# ---------------------------------------------------------------------------- relays
def _http_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _connect_fix(url: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".lower()
    host = urlsplit(url).hostname or ""
    if "refused" in text:
        local = host in ("127.0.0.1", "localhost", "::1")
        return ("nothing listens there: start a relay (`pylon relay --port "
                f"{urlsplit(url).port or 7777}` or `docker compose -f docker/compose.yaml --profile relay up`)"
                if local else "nothing listens there: check the host and port, or pick another relay")
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
        return f"the host name {host!r} does not resolve: check the spelling"
    if "ssl" in text or "certificate" in text:
        return "TLS failed: use wss:// only for relays that serve TLS (ws:// for local ones)"
    if "timed out" in text or "timeout" in text:
        return "no answer in time: is the host up and the port reachable (firewall)?"
    if "status" in text or "handshake" in text or "invalid" in text:
        return "the server there is not a websocket relay (wrong path or port?)"
    return "check the URL and that the relay is running"


async def fetch_relay_info(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """NIP-11 document of a relay (HTTP GET with Accept: application/nostr+json)."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
        resp = await client.get(_http_url(url), headers={"Accept": "application/nostr+json"})
    resp.raise_for_status()
    data = resp.json()
    if not isinstance(data, dict):
        raise ValueError("NIP-11 document is not a JSON object")
    return data


async def _nip11_finding(url: str, timeout: float) -> Finding:
    start = time.perf_counter()
    try:
        info = await fetch_relay_info(url, timeout=timeout)
    except Exception as exc:
        return Finding("relay", url, "nip11", Level.WARN,
                       f"no NIP-11 document ({type(exc).__name__}: {str(exc)[:160]})",
                       fix="optional: relays that publish NIP-11 let clients see their limits",
                       ms=_ms(start))
    name = str(info.get("name") or "unnamed")[:60]
    nips = info.get("supported_nips")
    detail = f"{name!r}"
    if isinstance(nips, list):
        detail += f", NIPs {','.join(str(n) for n in nips[:20])}"
    return Finding("relay", url, "nip11", Level.OK, detail, ms=_ms(start))


async def _recv(ws: Any, deadline: float) -> Any:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise asyncio.TimeoutError
    frame = await asyncio.wait_for(ws.recv(), remaining)
    return parse_relay_message(frame)


class _AuthState:
    """NIP-42 on one connection: answer the challenge once; remember what to resend after."""

    def __init__(self) -> None:
        self.sent_id: str | None = None
        self.ok = False
        self.resend: list[str] = []      # frames refused with auth-required, sent again once
        self.retried: set[str] = set()   # keys of what was already resent (never loop)


async def _round_trip(ws: Any, url: str, keys: Keys, timeout: float) -> Finding:
    """Subscribe to our own event by id, publish it, wait for OK and for its delivery back.

    Relays that require NIP-42 get an AUTH answer; what they refused with `auth-required`
    (the REQ, the EVENT) is sent once more after our AUTH is accepted."""
    start = time.perf_counter()
    now = int(time.time())
    event = Event.build(keys, ROUND_TRIP_KIND, f"pylon doctor round trip {secrets.token_hex(4)}",
                        [["expiration", str(now + 60)]])
    sub_id = "doctor-" + secrets.token_hex(4)
    req_frame = ClientReq(sub_id, [Filter.parse({"ids": [event.id]})]).to_json()
    event_frame = ClientEvent(event).to_json()
    await ws.send(req_frame)
    deadline = time.monotonic() + timeout
    auth = _AuthState()
    sent = False
    ok: RelayOk | None = None
    delivered = False
    notices: list[str] = []

    async def retry_after_auth(key: str, frame: str) -> bool:
        """Queue or resend a frame refused for auth; False if it was already retried."""
        if key in auth.retried:
            return False
        auth.retried.add(key)
        if auth.ok:
            await ws.send(frame)
        else:
            auth.resend.append(frame)
        return True

    try:
        while not (ok is not None and (delivered or not ok.accepted)):
            msg = await _recv(ws, deadline)
            if isinstance(msg, RelayEose) and msg.sub_id == sub_id and not sent:
                await ws.send(event_frame)
                sent = True
            elif isinstance(msg, RelayAuth) and auth.sent_id is None:
                answer = ClientAuth.answer(keys, url, msg.challenge)
                auth.sent_id = answer.event.id
                await ws.send(answer.to_json())
            elif isinstance(msg, RelayOk) and auth.sent_id is not None and msg.event_id == auth.sent_id:
                if not msg.accepted:
                    return Finding("relay", url, "round trip", Level.FAIL,
                                   f"relay refused our NIP-42 AUTH: {msg.message or 'no reason given'}",
                                   fix=_refusal_fix("auth-required:"), ms=_ms(start))
                auth.ok = True
                for frame in auth.resend:
                    await ws.send(frame)
                auth.resend.clear()
            elif isinstance(msg, RelayOk) and msg.event_id == event.id:
                prefix, _ = split_prefix(msg.message)
                if not msg.accepted and prefix == "auth-required" and await retry_after_auth("event", event_frame):
                    continue
                ok = msg
            elif isinstance(msg, RelayEvent) and msg.sub_id == sub_id and msg.event.id == event.id:
                delivered = msg.event.is_valid()
            elif isinstance(msg, RelayClosed) and msg.sub_id == sub_id:
                prefix, _ = split_prefix(msg.message)
                if prefix == "auth-required" and await retry_after_auth("req", req_frame):
                    continue
                return Finding("relay", url, "round trip", Level.FAIL,
                               f"relay closed our subscription: {msg.message or 'no reason given'}",
                               fix=_refusal_fix(msg.message), ms=_ms(start))
            elif isinstance(msg, RelayNotice):
                notices.append(msg.message[:120])
    except asyncio.TimeoutError:
        if auth.resend:
            what = "the relay wants NIP-42 AUTH but sent no challenge (or did not answer ours)"
        elif not sent:
            what = "no EOSE for a subscription"
        elif ok is None:
            what = "no OK for the published event"
        else:
            what = "the event was accepted but never delivered back to the subscription"
        extra = f" (NOTICE: {'; '.join(notices)})" if notices else ""
        return Finding("relay", url, "round trip", Level.FAIL, f"{what} within {timeout:g} s{extra}",
                       fix="the relay is up but does not follow NIP-01 here; try another relay",
                       ms=_ms(start))
    finally:
        try:
            await ws.send(ClientClose(sub_id).to_json())
        except Exception:
            pass
    if not ok.accepted:
        return Finding("relay", url, "round trip", Level.FAIL,
                       f"relay refused a signed event: {ok.message or 'no reason given'}",
                       fix=_refusal_fix(ok.message), ms=_ms(start))
    detail = "published an ephemeral event, got OK and read it back"
    if auth.ok:
        detail += " (after NIP-42 AUTH)"
    return Finding("relay", url, "round trip", Level.OK, detail, ms=_ms(start))


def _refusal_fix(message: str) -> str:
    prefix, _ = split_prefix(message or "")
    return {
        "auth-required": "the relay wants NIP-42 AUTH from a pubkey it knows: use your identity "
                         "(`pylon keys show`) on its allow list, or another relay",
        "restricted": "the relay only accepts known pubkeys or kinds: ask its operator or use another relay",
        "blocked": "the relay blocks this pubkey or kind: use another relay",
        "rate-limited": "the relay rate-limits you: try again later or use another relay",
        "pow": "the relay wants proof of work (NIP-13): use another relay",
        "invalid": "the relay thinks the event is malformed; if its clock is off, events are rejected by time",
    }.get(prefix, "use another relay, or ask its operator")


async def check_relay(url: str, *, keys: Keys | None = None, timeout: float = 5.0) -> list[Finding]:
    """connect -> NIP-11 -> publish/read round trip; later steps are skipped after a failure."""
    import websockets

    if not url.startswith(("ws://", "wss://")):
        return [Finding("relay", url, "connect", Level.FAIL, "not a websocket URL",
                        fix="relay URLs start with ws:// (local) or wss://")]
    keys = keys or Keys.generate()
    nip11_task = asyncio.create_task(_nip11_finding(url, timeout))
    start = time.perf_counter()
    try:
        ws = await asyncio.wait_for(websockets.connect(url, open_timeout=timeout, close_timeout=1,
                                                       max_size=2**20), timeout + 1)
    except (OSError, asyncio.TimeoutError, Exception) as exc:  # websockets raises many kinds
        nip11_task.cancel()
        detail = f"cannot connect ({type(exc).__name__}: {str(exc)[:200] or 'no detail'})"
        return [Finding("relay", url, "connect", Level.FAIL, detail, fix=_connect_fix(url, exc), ms=_ms(start)),
                Finding("relay", url, "round trip", Level.SKIP, "skipped: not connected")]
    findings = [Finding("relay", url, "connect", Level.OK, "websocket open", ms=_ms(start))]
    try:
        try:
            findings.append(await _round_trip(ws, url, keys, timeout))
        except InvalidMessage as exc:
            findings.append(Finding("relay", url, "round trip", Level.FAIL,
                                    f"relay sent a frame that is not NIP-01: {exc}",
                                    fix="this is not a (working) Nostr relay; check the URL"))
        except Exception as exc:  # connection dropped mid-way
            findings.append(Finding("relay", url, "round trip", Level.FAIL,
                                    f"connection lost ({type(exc).__name__}: {str(exc)[:200]})",
                                    fix="the relay dropped us: check its logs or try another relay"))
    finally:
        await ws.close()
    findings.insert(1, await nip11_task)
    return findings


# ---------------------------------------------------------------------------- backend
async def check_backend(url: str, *, api_key: str | None = None, models: Sequence[str] = (),
                        timeout: float = 5.0) -> list[Finding]:
    """GET {url}/models: reachable, OpenAI-compatible, and serving the configured models."""
    from pylon.provider.backends import BackendProtocolError, BackendRejected, BackendUnavailable, OpenAIBackend

    start = time.perf_counter()
    try:
        backend = OpenAIBackend(url, api_key=api_key, timeout=timeout)
    except Exception as exc:
        return [Finding("backend", url, "models", Level.FAIL, f"invalid backend URL: {exc}",
                        fix="use the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")]
    target = backend.base_url
    try:
        served = await backend.list_models()
    except BackendUnavailable as exc:
        return [Finding("backend", target, "models", Level.FAIL, f"cannot reach the backend: {exc}",
                        fix="start the OpenAI-compatible server (vLLM: `vllm serve MODEL --port 8000`) "
                            "or point --backend / PYLON_BACKEND at it", ms=_ms(start))]
    except BackendRejected as exc:
        if exc.status in (401, 403):
            fix = "the server wants an API key: set backend_api_key in config.toml or PYLON_BACKEND_API_KEY"
        elif exc.status == 404:
            fix = "no /models there: the base URL usually ends in /v1 (http://HOST:PORT/v1)"
        else:
            fix = "see the backend's own logs"
        return [Finding("backend", target, "models", Level.FAIL, str(exc), fix=fix, ms=_ms(start))]
    except BackendProtocolError as exc:
        return [Finding("backend", target, "models", Level.FAIL,
                        f"the server there is not OpenAI-compatible: {exc}",
                        fix="point --backend at the /v1 base URL of vLLM, llama.cpp, Ollama or SGLang",
                        ms=_ms(start))]
    finally:
        await backend.aclose()
    if not served:
        return [Finding("backend", target, "models", Level.FAIL, "the backend serves no models",
                        fix="start the server with a model loaded", ms=_ms(start))]
    findings = [Finding("backend", target, "models", Level.OK,
                        f"serves {', '.join(served[:5])}{' …' if len(served) > 5 else ''}", ms=_ms(start))]
    missing = [m for m in models if m not in served]
    if missing:
        findings.append(Finding("backend", target, "configured models", Level.FAIL,
                                f"configured model(s) not served: {', '.join(missing)}",
                                fix=f"serve them, or set models to some of: {', '.join(served[:5])}"))
    return findings


# ---------------------------------------------------------------------------- wallet
async def check_wallet(uri: str | None, *, timeout: float = 10.0) -> list[Finding]:
    """Open the wallet URI and ask for the balance. The URI is only ever shown redacted."""
    import wallet as wallet_pkg

    if not uri:
        return [Finding("wallet", "-", "balance", Level.SKIP, "no wallet configured",
                        fix="needed to pay for jobs or to be paid: --wallet URI or PYLON_WALLET "
                            "(dev:///path/ledger.sqlite?account=NAME for local work)")]
    start = time.perf_counter()
    scheme = wallet_pkg.scheme_of(uri)
    if scheme not in wallet_pkg.KNOWN_SCHEMES:  # refused before opening
        # Nothing of an unknown URI is shown: we cannot know which part of it is the secret.
        return [Finding("wallet", mask_secret(uri), "open", Level.FAIL,
                        f"bad wallet URI: unknown scheme {scheme + '://' if scheme else '(none)'}",
                        fix="URIs: dev:///PATH?account=NAME, lnbits://KEY@HOST:PORT, "
                            "nostr+walletconnect://PUBKEY?relay=…&secret=…")]
    target = wallet_pkg.redact_uri(uri)
    if scheme == "dev":
        from wallet.dev import parse_dev_uri

        try:
            path, _account = parse_dev_uri(uri)
        except wallet_pkg.WalletError as exc:
            return [Finding("wallet", target, "open", Level.FAIL, f"bad wallet URI: {exc}",
                            fix="dev:///ABSOLUTE/PATH/ledger.sqlite?account=NAME")]
        if not Path(path).exists():  # opening would create it: a doctor must not
            return [Finding("wallet", target, "open", Level.FAIL, f"the dev ledger {path} does not exist",
                            fix="fix the path, or create and fund an account with `pylon wallet fund`")]
    try:
        w = wallet_pkg.open_wallet(uri)
    except wallet_pkg.WalletError as exc:
        return [Finding("wallet", target, "open", Level.FAIL, f"bad wallet URI: {exc}",
                        fix="URIs: dev:///PATH?account=NAME, lnbits://KEY@HOST:PORT, "
                            "nostr+walletconnect://PUBKEY?relay=…&secret=…", ms=_ms(start))]
    except Exception as exc:
        return [Finding("wallet", target, "open", Level.FAIL,
                        f"bad wallet URI ({type(exc).__name__})",
                        fix="check the URI's form: dev://, lnbits:// or nostr+walletconnect://")]
    try:
        balance = await asyncio.wait_for(w.balance(), timeout)
    except asyncio.TimeoutError:
        return [Finding("wallet", target, "balance", Level.FAIL, f"no answer within {timeout:g} s",
                        fix="is the wallet service (and, for NWC, its relay) running?", ms=_ms(start))]
    except wallet_pkg.Unauthorized as exc:
        return [Finding("wallet", target, "balance", Level.FAIL, f"the wallet refused our credentials: {exc}",
                        fix="the key or secret in the URI is wrong or revoked: copy a fresh one from the wallet",
                        ms=_ms(start))]
    except wallet_pkg.WalletUnreachable as exc:
        return [Finding("wallet", target, "balance", Level.FAIL, f"cannot reach the wallet: {exc}",
                        fix="start the wallet service, or fix the host/relay in the URI", ms=_ms(start))]
    except wallet_pkg.WalletError as exc:
        return [Finding("wallet", target, "balance", Level.FAIL, f"the wallet answered with an error: {exc}",
                        fix="see the wallet's logs", ms=_ms(start))]
    finally:
        try:
            await w.aclose()
        except Exception:
            pass
    return [Finding("wallet", target, "balance", Level.OK, f"balance {balance} msat ({w.network})",
                    ms=_ms(start))]


# ---------------------------------------------------------------------------- all
async def run_doctor(*, relays: Sequence[str] | None = None, backend: str | None = None,
                     wallet: str | None = None, timeout: float = 5.0,
                     check_backend_too: bool = True) -> Report:
    """Every check, concurrently; findings in a stable order (config, relays, backend, wallet)."""
    overrides = {"relays": list(relays) if relays else None, "backend": backend, "wallet": wallet}
    settings, config_findings = check_config(overrides)
    keys: Keys | None = None
    if identity_path().exists():
        try:
            keys = Keys.load(identity_path())
        except (OSError, NostrError):
            keys = None
    relay_urls = list(relays) if relays else list(settings.relays)
    tasks: list[Any] = [check_relay(u, keys=keys, timeout=timeout) for u in relay_urls]
    if check_backend_too:
        tasks.append(check_backend(backend or settings.backend, api_key=settings.backend_api_key,
                                   models=settings.model_names, timeout=timeout))
    tasks.append(check_wallet(wallet or settings.wallet, timeout=max(timeout, 5.0)))
    results = await asyncio.gather(*tasks)
    report = Report(list(config_findings))
    for found in results:
        report.findings.extend(found)
    return report
