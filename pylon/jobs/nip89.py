"""NIP-89 provider announcements (kind 31990, `k` = 5050) and discovery.

A provider publishes one addressable kind-31990 event (`["d", id]`, `["k", "5050"]`) whose
content is JSON describing what a customer needs to choose it:

    {"name": "...", "about": "...", "models": ["llama-3-8b", ...],
     "pricing": {"price_msat": 0, "price_per_1k_tokens_msat": 0},
     "encryption": ["nip44", "nip04"], "response_format": true,
     "relays": ["wss://..."], "max_tokens": 4096, "context_lengths": {"llama-3-8b": 8192},
     "version": "pylon/0.1.0"}

`context_lengths` (model -> tokens, prompt and answer together) is there when the backend
reports it (vLLM's max_model_len); a job's max_tokens is then capped to what the prompt
leaves of it.

Discovery asks relays for `{"kinds": [31990], "#k": ["5050"]}` and keeps the newest
announcement per pubkey; its `created_at` is when the provider was last seen (providers
re-announce periodically).

Liveness (issue 10): a Pylon provider's announcement carries a NIP-40 `["expiration", t]`
(a few refresh intervals ahead) and is re-published while its backend is healthy; when the
backend goes down the provider withdraws it (a NIP-09 deletion naming `31990:<pubkey>:<d>`)
and stops announcing. So a stopped or broken provider vanishes from relays by itself.
`ProviderInfo.live()` is true for an unexpired announcement, or, for software that sets no
expiration, one re-published within `STALE_AFTER_S`. `"delivery": ["key"]` in the content
announces pay-for-the-key delivery (docs/PROTOCOL.md, "Pylon extensions"). Announcements from other software vary wildly, so every field
is read defensively: a field of the wrong type is dropped, not fatal; content that is not
JSON at all makes that one announcement unusable (skipped, logged).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pydantic import BaseModel, Field

from pylon.version import __version__
from pylon.errors import JobError
from pylon.jobs.pricing import capped_max_tokens, quote_msat
from pylon.nostr import kinds
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys

if TYPE_CHECKING:  # pragma: no cover
    from pylon.relay.pool import RelayPool

log = logging.getLogger(__name__)

KIND_HANDLER = kinds.HANDLER_INFO  # 31990
STALE_AFTER_S = 3600  # an announcement without expiration counts as live this long
JOB_KIND = str(kinds.JOB_REQUEST_TEXT)  # "5050"
DEFAULT_D = "pylon-5050"


class AnnouncementParseError(JobError, ValueError):
    """A kind-31990 event is not a usable kind-5050 provider announcement."""


class ProviderInfo(BaseModel):
    """What a provider announced, plus when it was last seen."""

    pubkey: str
    name: str = ""
    about: str = ""
    models: list[str] = Field(default_factory=list)
    price_msat: int = 0
    price_per_1k_tokens_msat: int = 0
    encryption: list[str] = Field(default_factory=list)
    response_format: bool = False
    tools: bool = False  # passes OpenAI function tools to its backend and returns tool_calls
    relays: list[str] = Field(default_factory=list)
    max_tokens: int | None = None
    # model -> context length in tokens (prompt + answer), where the backend reports it
    context_lengths: dict[str, int] = Field(default_factory=dict)
    version: str = ""
    d: str = ""
    last_seen: int = 0  # created_at of the announcement
    event_id: str = ""
    expires_at: int | None = None  # NIP-40 expiration of the announcement, if any
    delivery: list[str] = Field(default_factory=list)  # "key": pay-for-the-key delivery (Pylon extension)
    # NIP-90 params the provider documents (nostrdvm's "nip90Params": name -> {required, values})
    params: dict[str, Any] = Field(default_factory=dict)

    def live(self, now: float | None = None, stale_after_s: int | None = None) -> bool:
        """Unexpired (NIP-40), or without expiration and announced within `stale_after_s`."""
        t = time.time() if now is None else now
        if self.expires_at is not None:
            return self.expires_at > t
        return self.last_seen >= t - (STALE_AFTER_S if stale_after_s is None else stale_after_s)

    @property
    def npub(self) -> str:
        from pylon.nostr.keys import npub_of

        return npub_of(self.pubkey)

    @property
    def supports_nip44(self) -> bool:
        return "nip44" in self.encryption

    def quote_msat(self, max_tokens: int | None = None) -> int:
        """What a Pylon provider will ask for a job: price_msat + ceil(max_tokens * per_1k / 1000),
        max_tokens capped at the announced max_tokens (the cap when None). Wallets that only
        issue whole-sat invoices round this up to the next 1000 msat (pylon.jobs.pricing)."""
        tokens = capped_max_tokens(max_tokens, self.max_tokens)
        return quote_msat(tokens, price_msat=self.price_msat, price_per_1k_tokens_msat=self.price_per_1k_tokens_msat)

    def serves(self, model: str | None) -> bool:
        """True when the provider announced `model` (or announced no model list at all)."""
        return model is None or not self.models or model in self.models

    def content(self) -> dict[str, Any]:
        """The announcement content JSON (the inverse of parsing it)."""
        data: dict[str, Any] = {
            "name": self.name,
            "about": self.about,
            "models": self.models,
            "pricing": {"price_msat": self.price_msat, "price_per_1k_tokens_msat": self.price_per_1k_tokens_msat},
            "encryption": self.encryption,
            "response_format": self.response_format,
            "tools": self.tools,
            "relays": self.relays,
            "version": self.version,
        }
        if self.max_tokens is not None:
            data["max_tokens"] = self.max_tokens
        if self.context_lengths:
            data["context_lengths"] = self.context_lengths
        return data


PROFILE_FIELDS = ("about", "picture", "lud16", "website")


def clean_profile(profile: Mapping[str, Any] | None) -> dict[str, str]:
    """The operator's identity fields (announcement and kind-0 profile): only the known ones,
    non-empty strings, bounded."""
    profile = profile or {}
    return {k: v[:1000] for k in PROFILE_FIELDS if isinstance(v := profile.get(k), str) and v}


def build_announcement(
    keys: Keys,
    *,
    models: Iterable[str],
    name: str = "Pylon provider",
    about: str = "LLM text generation (NIP-90 kind 5050) on an OpenAI-compatible backend",
    price_msat: int = 0,
    price_per_1k_tokens_msat: int = 0,
    encryption: Iterable[str] = ("nip44", "nip04"),
    response_format: bool = True,
    tools: bool = False,
    relays: Iterable[str] = (),
    max_tokens: int | None = None,
    context_lengths: dict[str, int] | None = None,
    d: str = DEFAULT_D,
    version: str | None = None,
    created_at: int | None = None,
    expires_in_s: int | None = None,
    delivery: Iterable[str] = (),
    profile: dict[str, str] | None = None,
) -> Event:
    """Sign a kind-31990 announcement for a kind-5050 provider (NIP-40 expiry `expires_in_s` from now)."""
    info = ProviderInfo(
        pubkey=keys.public_key, name=name, about=about, models=list(models),
        price_msat=int(price_msat), price_per_1k_tokens_msat=int(price_per_1k_tokens_msat),
        encryption=list(encryption), response_format=response_format, tools=tools, relays=list(relays),
        max_tokens=max_tokens, context_lengths=dict(context_lengths or {}),
        version=version or f"pylon/{__version__}", d=d,
    )
    data = info.content()
    if delivery:
        data["delivery"] = list(delivery)
    data.update(clean_profile(profile))  # the operator's identity fields (issue 18)
    content = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    tags = [["d", d], ["k", JOB_KIND]]
    if expires_in_s is not None:
        at = int(time.time()) if created_at is None else created_at
        tags.append(["expiration", str(at + int(expires_in_s))])
    return Event.build(keys, KIND_HANDLER, content, tags, created_at=created_at)


def build_withdrawal(keys: Keys, d: str = DEFAULT_D, reason: str = "provider unavailable") -> Event:
    """A NIP-09 deletion of our announcement (by its address): how a provider stops announcing."""
    return Event.build(keys, kinds.DELETION, reason,
                       [["a", f"{KIND_HANDLER}:{keys.public_key}:{d}"], ["k", str(KIND_HANDLER)]])


def _str(value: Any, limit: int = 1000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _str_list(value: Any, limit: int = 256) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [x[:256] for x in value if isinstance(x, str) and x][:limit]


def _msat(value: Any) -> int | None:
    """A non-negative integer amount from an int or a string like "100_000"; None if junk."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        try:
            number = int(value.strip().replace("_", "").replace(",", ""))
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _context_lengths(value: Any, limit: int = 256) -> dict[str, int]:
    """{model: positive int} from an announcement; junk entries are dropped."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, int] = {}
    for model, length in list(value.items())[:limit]:
        tokens = _msat(length)
        if isinstance(model, str) and model and tokens:
            out[model[:256]] = tokens
    return out


def parse_announcement(event: Event) -> ProviderInfo:
    """Read a kind-31990 event announcing kind 5050; raises AnnouncementParseError."""
    if event.kind != KIND_HANDLER:
        raise AnnouncementParseError(f"not a kind-{KIND_HANDLER} announcement (kind {event.kind})")
    if JOB_KIND not in event.tag_values("k"):
        raise AnnouncementParseError("announcement does not list kind 5050 in a 'k' tag")
    data: dict[str, Any] = {}
    if event.content.strip():
        try:
            data = json.loads(event.content)
        except ValueError:
            raise AnnouncementParseError("announcement content is not JSON") from None
        if not isinstance(data, dict):
            raise AnnouncementParseError("announcement content is not a JSON object")
    raw_pricing = data.get("pricing")
    pricing = raw_pricing if isinstance(raw_pricing, dict) else {}
    price = _msat(pricing.get("price_msat", data.get("price_msat")))
    per_1k = _msat(pricing.get("price_per_1k_tokens_msat", data.get("price_per_1k_tokens_msat")))
    max_tokens = _msat(data.get("max_tokens"))
    encryption = [x.lower() for x in _str_list(data.get("encryption"))]
    if data.get("nip44") is True and "nip44" not in encryption:
        encryption.append("nip44")
    params = _nip90_params(data.get("nip90Params"))
    models = _str_list(data.get("models")) or _str_list(params.get("model", {}).get("values"))
    if data.get("supportsEncryption") is True:
        # nostrdvm: decrypts requests with NIP-04, else NIP-44, and answers in NIP-44
        encryption += [x for x in ("nip44", "nip04") if x not in encryption]
    return ProviderInfo(
        pubkey=event.pubkey,
        name=_str(data.get("name") or data.get("display_name"), 200),
        about=_str(data.get("about")),
        models=models,
        price_msat=price or 0,
        price_per_1k_tokens_msat=per_1k or 0,
        encryption=encryption,
        response_format=data.get("response_format") is True,
        tools=data.get("tools") is True,
        relays=[u for u in _str_list(data.get("relays")) if u.startswith(("ws://", "wss://"))],
        max_tokens=max_tokens or None,
        context_lengths=_context_lengths(data.get("context_lengths")),
        version=_str(data.get("version"), 100),
        d=event.d_tag(),
        last_seen=event.created_at,
        expires_at=event.expiration(),
        delivery=[x.lower() for x in _str_list(data.get("delivery"), 8)],
        params=params,
        event_id=event.id,
    )


def _nip90_params(value: Any, limit: int = 64) -> dict[str, Any]:
    """nostrdvm's `nip90Params` ({name: {"required": bool, "values": [str]}}), junk dropped."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {}
    for name, spec in list(value.items())[:limit]:
        if isinstance(name, str) and name and isinstance(spec, dict):
            out[name[:64]] = {"required": spec.get("required") is True, "values": _str_list(spec.get("values"), 64)}
    return out


def discovery_filter(since: int | None = None) -> Filter:
    fields: dict[str, Any] = {"kinds": [KIND_HANDLER], "k": [JOB_KIND]}
    if since is not None:
        fields["since"] = since
    return Filter.of(**fields)


def newest_per_pubkey(events: Iterable[Event]) -> list[ProviderInfo]:
    """Parse announcements and keep the newest usable one per pubkey, newest first."""
    best: dict[str, ProviderInfo] = {}
    for event in events:
        try:
            info = parse_announcement(event)
        except AnnouncementParseError as exc:
            log.debug("skipping announcement %s from %s: %s", event.id[:12], event.pubkey[:12], exc)
            continue
        current = best.get(info.pubkey)
        if current is None or (info.last_seen, current.event_id) > (current.last_seen, info.event_id):
            best[info.pubkey] = info
    return sorted(best.values(), key=lambda p: p.last_seen, reverse=True)


async def discover(pool: "RelayPool", *, model: str | None = None, since: int | None = None,
                   timeout: float = 5.0) -> list[ProviderInfo]:
    """Providers announcing kind 5050 on the pool's relays (optionally serving `model`)."""
    events = await pool.query([discovery_filter(since)], timeout=timeout)
    providers = newest_per_pubkey(events)
    return [p for p in providers if p.serves(model)] if model else providers
