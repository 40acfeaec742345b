"""Writing PYLON_HOME/config.toml: `pylon config init` and `pylon config set KEY VALUE`.

Why line-based: the file `init` writes is mostly comments (every setting, its meaning and
its default, commented out), and a TOML library would drop them on the first `set`. `set`
replaces the line that names the key (commented or not) or appends one, so the comments
stay. Values are validated with the same Settings model every command uses before the file
is touched; the file is written atomically with mode 0600 (it may hold a wallet URI).

Keys are the setting names (`max_tokens_cap`); `history.save_text` is accepted for
`history_save_text` (a `[history]` table in the file is read the same way).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from pylon.errors import ConfigError
from pylon.ops.config import KEY_FIELDS, Settings, flatten_tables, read_config_text, validation_problems

DESCRIPTIONS: dict[str, str] = {
    "relays": "Relay URLs every command uses (ws:// or wss://).",
    "wallet": "Wallet URI that pays (ask) or invoices (serve): dev://, lnbits://, nostr+walletconnect://. Secret.",
    "backend": "OpenAI-compatible server `pylon serve` answers from (vLLM, llama.cpp, Ollama, SGLang).",
    "backend_api_key": "Bearer key for the backend, if it needs one. Secret.",
    "models": "Models `pylon serve` offers (empty: whatever the backend lists).",
    "concurrency": "Jobs `pylon serve` runs at once.",
    "max_tokens_cap": "Most tokens per job `pylon serve` generates (also capped by the model's context).",
    "price_msat": "Price per job in msat (serve).",
    "price_per_1k_tokens_msat": "Price per 1000 max_tokens in msat (serve).",
    "free": "Serve without payment whatever the price.",
    "max_msat": "Most msat one ask may pay.",
    "daily_budget_msat": "Most msat all asks together may pay per UTC day.",
    "route": "How an untargeted ask chooses among offers: cheapest, fastest or best.",
    "avoid": "Providers never used (npub or hex).",
    "decision_window_ms": "How long an ask collects quotes after the first one.",
    "timeout_s": "Seconds an ask waits for its answer.",
    "log_format": "Server logs: text or json.",
    "metrics_port": "Port for /metrics and /health (serve, relay).",
    "metrics_host": "Address for the metrics port.",
    "partial_interval_ms": "Provider: how long streamed text is coalesced into one partial.",
    "provider_name": "Provider: the name in its NIP-89 announcement and kind-0 profile ([provider] name).",
    "provider_about": "Provider: a line about it (announcement and profile).",
    "provider_picture": "Provider: picture URL (announcement and profile).",
    "provider_lud16": "Provider: Lightning address (user@domain) in its announcement and profile.",
    "provider_allow": "Provider: serve only these customers (npub or hex; empty: everyone) ([provider] allow).",
    "provider_deny": "Provider: never serve these customers ([provider] deny).",
    "drain_timeout_s": "Provider: on SIGTERM/Ctrl-C, seconds to finish paid and running jobs before exiting.",
    "workers": "Provider: processes serving under one identity and job store, one per core (`--workers`).",
    "history_save_text": "Keep prompt and answer text in `pylon history` (off: only sizes and metadata).",
}
_ALIASES = {"history.save_text": "history_save_text"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def canonical_key(key: str) -> str:
    """`history.save_text` / `max-tokens-cap` -> the Settings field name; ConfigError if unknown."""
    name = _ALIASES.get(key, key.replace("-", "_").replace(".", "_"))
    if name not in Settings.model_fields:
        raise ConfigError(f"unknown setting {key!r}", hint=f"known: {', '.join(Settings.model_fields)}")
    return name


def toml_value(value: Any) -> str:
    """A TOML literal for the values settings take (str, int, float, bool, list of str)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _field_kind(name: str) -> Any:
    annotation = Settings.model_fields[name].annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is list:
        return list
    if len(args) == 1 and get_origin(annotation) is not None and get_origin(args[0]) is None:
        return args[0]  # Optional[X]
    return annotation


def _pubkeys(name: str, values: list[str]) -> list[str]:
    """Public keys (npub or hex) as npubs, the form a user reads back; anything else refused."""
    from pylon.nostr.errors import InvalidKey
    from pylon.nostr.keys import normalize_pubkey, npub_of

    out: list[str] = []
    for value in values:
        try:
            npub = npub_of(normalize_pubkey(value))
        except InvalidKey as exc:
            message, hint = exc.parts()
            raise ConfigError(f"{name}: {message}", hint=hint or "give an npub1… or 64 hex characters") from None
        if npub not in out:
            out.append(npub)
    return out


def parse_value(name: str, raw: str) -> Any:
    """The command-line text of a value as the setting's type (lists comma-separated; public
    keys checked and stored as npubs)."""
    kind = _field_kind(name)
    text = raw.strip()
    if name in KEY_FIELDS:
        return _pubkeys(name, [x.strip() for x in text.split(",") if x.strip()])
    if kind is list:
        return [x.strip() for x in text.split(",") if x.strip()]
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} takes true or false, got {raw!r}")
    if kind is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name} takes a whole number, got {raw!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name} takes a number, got {raw!r}") from None
    return text


def render_commented(defaults: Settings | None = None) -> str:
    """The text `pylon config init` writes: every setting commented out at its default."""
    settings = defaults or Settings()
    lines = [
        "# Pylon configuration (pylon config init). Precedence: defaults < this file < PYLON_* environment",
        "# variables < command-line flags. Uncomment a line to change a setting, or run",
        "# `pylon config set KEY VALUE` (validated). `pylon config show` prints what is in effect.",
        "",
    ]
    for name in Settings.model_fields:
        value = getattr(settings, name)
        lines.append(f"# {DESCRIPTIONS.get(name, name.replace('_', ' '))}")
        lines.append(f"# {name} = {toml_value(value)}" if value is not None else f"# {name} =")
        lines.append("")
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (mode 0600), never leaving a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def init_file(path: Path, *, force: bool = False) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists", hint="pass --force to replace it (or use `pylon config set`)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, render_commented())


def set_value(path: Path, key: str, raw: str) -> tuple[str, Any]:
    """Validate KEY=VALUE against the whole file and write it; returns (name, value)."""
    name = canonical_key(key)
    value = parse_value(name, raw)
    text, current = read_config_text(path, hint="fix or remove the file first")
    current[name] = value
    try:
        Settings(**current)
    except ValidationError as exc:
        raise ConfigError(f"invalid value for {name}: {validation_problems(exc)}") from None
    if name == "wallet" and value:  # refused now, not at the first payment (it is not opened here)
        from wallet import check_uri

        check_uri(str(value))
    line = f"{name} = {toml_value(value)}"
    pattern = re.compile(rf"^\s*#?\s*{re.escape(name)}\s*=.*$", re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _m: line, text, count=1)
    else:
        text = (text.rstrip("\n") + "\n" if text else "") + line + "\n"
    if "[" in text and re.search(r"^\s*\[", text, re.MULTILINE):
        # a key appended after a [table] header would land inside that table: keep it top-level
        raise ConfigError(f"{path} has [table] sections; set {name} by editing the file")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, text)
    return name, value


def unset_value(path: Path, key: str) -> tuple[str, bool]:
    """Take KEY out of the file (its line commented out), so its default (or PYLON_*) applies
    again; returns (name, whether it was set). A list such as `avoid` is cleared this way."""
    name = canonical_key(key)
    text, current = read_config_text(path, hint="fix or remove the file first")
    if name not in current:
        return name, False
    pattern = re.compile(rf"^(\s*){re.escape(name)}(\s*=.*)$", re.MULTILINE)
    new_text = pattern.sub(lambda m: f"{m.group(1)}# {name}{m.group(2)}", text, count=1)
    try:
        left = flatten_tables(tomllib.loads(new_text))
    except tomllib.TOMLDecodeError:
        left = {name: None}
    if name in left:  # a table, a value over several lines: not something to rewrite blindly
        raise ConfigError(f"cannot unset {name} in {path} automatically", hint=f"edit the file and remove {name}")
    write_atomic(path, new_text)
    return name, True
