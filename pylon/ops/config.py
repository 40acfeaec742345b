"""Effective configuration: defaults < PYLON_HOME/config.toml < PYLON_* environment < flags.

One pydantic model validates every source the same way. Lists in the environment are
comma-separated (PYLON_RELAYS=ws://a,ws://b). Secrets are masked by `masked()`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pylon.customer.defaults import DEFAULT_DAILY_BUDGET_MSAT, DEFAULT_MAX_MSAT
from pylon.errors import ConfigError
from pylon.home import config_path

DEFAULT_RELAY = "ws://127.0.0.1:7777"


class ModelEntry(BaseModel):
    """One `[[models]]` table in config.toml: a model served from its own backend (issue 18)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    backend: str | None = None  # OpenAI-compatible base URL; None: the `backend` setting
    backend_api_key: str | None = None  # secret
    price_msat: int | None = Field(None, ge=0)  # None: the provider's price_msat
    price_per_1k_tokens_msat: int | None = Field(None, ge=0)
    max_concurrency: int = Field(32, ge=1, le=4096)


class Settings(BaseModel):
    """Everything a Pylon process can be configured with."""

    model_config = ConfigDict(extra="forbid")

    relays: list[str] = Field(default_factory=lambda: [DEFAULT_RELAY])
    wallet: str | None = None  # wallet URI (secret: never printed)
    backend: str = "http://127.0.0.1:8000/v1"
    backend_api_key: str | None = None  # secret
    models: list[str | ModelEntry] = Field(default_factory=list)  # names, or [[models]] tables
    concurrency: int = Field(32, ge=1, le=4096)
    max_tokens_cap: int = Field(4096, ge=1)
    price_msat: int = Field(0, ge=0)
    price_per_1k_tokens_msat: int = Field(0, ge=0)
    free: bool = False
    # money-safe defaults (pylon.customer.defaults): every paying command has a cap unless raised
    max_msat: int = Field(DEFAULT_MAX_MSAT, ge=0)  # per-job spending cap (client), msat
    daily_budget_msat: int = Field(DEFAULT_DAILY_BUDGET_MSAT, ge=0)  # per UTC day, all asks, msat
    # choosing among offers (pylon.customer.offers): untargeted jobs only
    route: Literal["cheapest", "fastest", "best"] = "cheapest"
    avoid: list[str] = Field(default_factory=list)  # providers never used (npub or hex)
    decision_window_ms: int = Field(300, ge=0, le=60_000)  # collect quotes this long from the first one
    # reputation (pylon.customer.reviews): publish signed NIP-32 reviews; read only these keys' reviews
    publish_reviews: bool = False
    key_delivery: bool = True  # ask providers to sell the key to a sealed result (pylon.jobs.keyed)
    trusted_reviewers: list[str] = Field(default_factory=list)
    timeout_s: float = Field(120.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"  # bind address of /metrics and /health (0.0.0.0 in docker)
    tools: bool = False  # provider: announce and pass OpenAI function tools to the backend
    partial_interval_ms: int = Field(50, ge=0, le=60_000)  # provider: coalesce streamed partials this long
    # [provider] name/about/picture/lud16: the provider's identity in NIP-89 and its kind-0 profile
    provider_name: str = Field("Pylon provider", min_length=1, max_length=100)
    provider_about: str | None = Field(None, max_length=1000)
    provider_picture: str | None = Field(None, max_length=1000)
    provider_lud16: str | None = Field(None, max_length=320)  # Lightning address for zaps/tips
    provider_allow: list[str] = Field(default_factory=list)  # [provider] allow: only these customers (npub/hex)
    provider_deny: list[str] = Field(default_factory=list)  # [provider] deny: never these customers
    drain_timeout_s: float = Field(30.0, ge=0, le=86_400)  # provider: on SIGTERM, finish paid jobs this long
    workers: int = Field(1, ge=1, le=64)  # provider: processes sharing the jobs (pylon.provider.workers)
    history_save_text: bool = False  # [history] save_text: keep prompt/answer text in `pylon history`

    @field_validator("relays")
    @classmethod
    def _check_relays(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"relay URL must start with ws:// or wss://: {url!r}")
        return value

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("wallet", "backend_api_key")

    @property
    def model_names(self) -> list[str]:
        return [m if isinstance(m, str) else m.name for m in self.models]

    @property
    def model_entries(self) -> list[ModelEntry]:
        """The `[[models]]` tables (plain names have no table)."""
        return [m for m in self.models if isinstance(m, ModelEntry)]

    def masked(self) -> dict[str, Any]:
        """The settings as a dict with secrets replaced (safe to print or log)."""
        data = self.model_dump()
        for entry in data.get("models") or []:
            if isinstance(entry, dict) and entry.get("backend_api_key"):
                entry["backend_api_key"] = "***"
        for name in self.SECRET_FIELDS:
            if data.get(name):
                data[name] = mask_secret(str(data[name]))
        return data


def mask_secret(value: str) -> str:
    """Keep the scheme (so users can tell which wallet), hide everything else."""
    scheme, sep, _ = value.partition("://")
    return f"{scheme}://***" if sep else "***"


_FLAG_OF = {"relays": "--relay", "models": "--model"}  # settings whose flag is spelt otherwise (repeatable)
_LIST_FIELDS = {"relays", "models", "avoid", "trusted_reviewers", "provider_allow", "provider_deny"}


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = environ.get("PYLON_" + name.upper())
        if raw is None or raw == "":
            continue
        if name in _LIST_FIELDS:
            out[name] = [x.strip() for x in raw.split(",") if x.strip()]
        elif name in ("free", "history_save_text", "tools"):
            out[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            out[name] = raw
    return out


def flatten_tables(data: dict[str, Any]) -> dict[str, Any]:
    """`[history] save_text = true` in config.toml is the setting `history_save_text`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in flatten_tables(value).items()})
        else:
            out[key] = value
    return out


KEY_FIELDS = ("avoid", "trusted_reviewers", "provider_allow", "provider_deny")  # lists of public keys


def setting_source(name: str, *, path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    """Where a setting read from the environment or the config file was set, as a user finds
    it: `PYLON_NAME` when that variable is set, else the config file's path."""
    env = dict(os.environ) if environ is None else environ
    return f"PYLON_{name.upper()}" if env.get("PYLON_" + name.upper()) else str(path or config_path())


def setting_pubkeys(settings: Settings, name: str, *, path: Path | None = None,
                    environ: dict[str, str] | None = None) -> list[str]:
    """A key-valued setting (KEY_FIELDS) as hex public keys. A value that is no public key (a
    hand-edited config.toml, a PYLON_* variable) is a ConfigError naming the setting and where
    it is set, never a bare "not a public key" later."""
    from pylon.nostr.errors import InvalidKey
    from pylon.nostr.keys import normalize_pubkey

    out: list[str] = []
    for value in getattr(settings, name):
        try:
            out.append(normalize_pubkey(value))
        except InvalidKey as exc:
            message, _ = exc.parts()
            where = setting_source(name, path=path, environ=environ)
            raise ConfigError(f"setting {name} in {where}: {message}",
                              hint=f"give npub1… or 64-hex keys: `pylon config set {name} NPUB[,NPUB…]` "
                                   f"(or edit {where})") from None
    return out


def read_config_file(path: Path, *, hint: str | None = None) -> dict[str, Any]:
    """config.toml's settings, flattened; {} when the file is missing or empty. ConfigError
    (one line) for a file that is not TOML, not UTF-8 text, or cannot be read."""
    return read_config_text(path, hint=hint)[1]


def read_config_text(path: Path, *, hint: str | None = None) -> tuple[str, dict[str, Any]]:
    """config.toml's text ("" when missing) and its settings, flattened, from one read (for
    the commands that rewrite a line of it); the same ConfigError as `read_config_file`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML: it is not UTF-8 text", hint=hint) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
    try:
        return text, flatten_tables(tomllib.loads(text)) if text else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint=hint) from None


def validation_problems(exc: ValidationError) -> str:
    """pydantic's errors as `field: message; ...`, without its "Value error, " prefix."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())


def load_settings(overrides: dict[str, Any] | None = None, *, path: Path | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Merge the sources in precedence order; flags whose value is None are ignored."""
    file = path or config_path()
    from_file = read_config_file(file)
    from_env = _from_env(dict(os.environ) if environ is None else environ)
    from_flags = {k: v for k, v in (overrides or {}).items() if v is not None and v != []}
    merged = {**from_file, **from_env, **from_flags}
    try:
        return Settings(**merged)
    except ValidationError as exc:
        fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        where = []  # where each bad value came from: the last source that set it
        for name in sorted(fields):
            if name in from_flags:
                where.append(f"the {_FLAG_OF.get(name, '--' + name.replace('_', '-'))} flag")
            elif name in from_env:
                where.append(f"PYLON_{name.upper()}")
            elif name in from_file or name not in Settings.model_fields:
                where.append(str(file))
        raise ConfigError(f"invalid configuration ({validation_problems(exc)})",
                          hint=f"check {', '.join(dict.fromkeys(where)) or 'the configuration'}") from None
