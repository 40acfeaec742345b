"""`pylon config show|path|init|set|unset`: the effective configuration, secrets masked; writing it.

Precedence (lowest first): defaults < PYLON_HOME/config.toml < PYLON_* environment < flags.
`show` also says where each value came from, which is what people need when a value is not
the one they expected. `init` writes a commented config.toml (every setting at its default,
commented out) and `set KEY VALUE` changes one setting after validating it
(pylon.ops.config_file).
"""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.table import Table

from cli.common import console, fail, handle_errors, print_json
from pylon.errors import ConfigError
from pylon.home import config_path

# pylon.ops.config / config_file are imported inside the commands: they build pydantic models on
# import, which every `pylon` invocation would pay for otherwise (cli.defaults)

app = typer.Typer(help="Show the effective configuration and where it lives.", no_args_is_help=True)

_LIST_FIELDS = {"relays", "models", "avoid", "trusted_reviewers"}


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs (lists comma-separated) into Settings overrides."""
    from pylon.ops.config import Settings

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            fail(f"--set expects KEY=VALUE, got {item.split('=', 1)[0]!r}", 2)
        if key not in Settings.model_fields:
            fail(f"unknown setting {key!r}; known: {', '.join(Settings.model_fields)}", 2)
        out[key] = [x.strip() for x in value.split(",") if x.strip()] if key in _LIST_FIELDS else value
    return out


def _sources(overrides: dict[str, Any]) -> dict[str, str]:
    """Which layer each setting's value came from: default, file, env (PYLON_X) or flag."""
    from pylon.ops.config import Settings, read_config_file

    try:
        file_keys = set(read_config_file(config_path()))
    except ConfigError:  # shown by `load_settings` already; here only the labels would be missing
        file_keys = set()
    sources: dict[str, str] = {}
    for name in Settings.model_fields:
        env_name = "PYLON_" + name.upper()
        if overrides.get(name) not in (None, []):
            sources[name] = "flag"
        elif os.environ.get(env_name):
            sources[name] = f"env {env_name}"
        elif name in file_keys:
            sources[name] = "file"
        else:
            sources[name] = "default"
    return sources


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@app.command("show")
@handle_errors
def show(
    relay: list[str] = typer.Option([], "--relay", help="Override relays (as serve/ask would)."),
    backend: str | None = typer.Option(None, "--backend", help="Override the backend URL."),
    wallet: str | None = typer.Option(None, "--wallet", help="Override the wallet URI (shown masked)."),
    set_: list[str] = typer.Option([], "--set", help="Override any setting: KEY=VALUE (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Print the effective configuration (defaults < config.toml < PYLON_* < flags), secrets masked."""
    from pylon.ops.config import load_settings

    overrides: dict[str, Any] = _parse_sets(set_)
    overrides.update({k: v for k, v in (("relays", relay or None), ("backend", backend),
                                          ("wallet", wallet)) if v})
    settings = load_settings(overrides)
    masked = settings.masked()
    sources = _sources(overrides)
    path = config_path()
    if json_out:
        print_json({"config_path": str(path), "config_file_exists": path.exists(),
                    "settings": masked, "sources": sources})
        return
    table = Table(title=f"Effective configuration ({path}{'' if path.exists() else ', absent'})",
                  title_justify="left")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from", style="dim")
    for name, value in masked.items():
        table.add_row(name, _fmt(value), sources[name])
    console.print(table, highlight=False)


@app.command("init")
@handle_errors
def init_cmd(force: bool = typer.Option(False, "--force", "-f", help="Replace an existing config file.")) -> None:
    """Write a commented config.toml: every setting at its default, ready to uncomment."""
    from pylon.ops.config_file import init_file

    path = config_path()
    init_file(path, force=force)
    console.print(f"wrote {path}", highlight=False, markup=False)


@app.command("set")
@handle_errors
def set_cmd(
    key: str = typer.Argument(..., help="Setting name, e.g. relays, timeout_s, history.save_text."),
    value: str = typer.Argument(..., help="Its value (lists comma-separated; true/false)."),
) -> None:
    """Set one setting in config.toml after validating it (secrets are not echoed)."""
    from pylon.ops.config import Settings
    from pylon.ops.config_file import set_value

    path = config_path()
    name, parsed = set_value(path, key, value)
    shown = Settings.model_validate({name: parsed}).masked()[name] if name in Settings.SECRET_FIELDS else parsed
    console.print(f"{name} = {_fmt(shown)} ({path})", highlight=False, markup=False)


@app.command("unset")
@handle_errors
def unset_cmd(
    key: str = typer.Argument(..., help="Setting name, e.g. avoid, wallet, history.save_text."),
) -> None:
    """Remove one setting from config.toml (its default applies again; clears a list such as avoid)."""
    from pylon.ops.config_file import unset_value

    path = config_path()
    name, was_set = unset_value(path, key)
    console.print(f"{name} unset ({path})" if was_set else f"{name} was not set in {path}",
                  highlight=False, markup=False)


@app.command("path")
def path_cmd(json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Print the path of the config file (PYLON_HOME/config.toml), whether or not it exists."""
    path = config_path()
    if json_out:
        print_json({"config_path": str(path), "exists": path.exists()})
    else:
        typer.echo(str(path))

