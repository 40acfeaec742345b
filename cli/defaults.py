"""Settings for the CLI, loaded only when a command needs them; effective defaults for help texts.

Why lazy: pylon.ops.config builds pydantic models on import (about 0.2 s), and every `pylon`
invocation imports every command module, so a module-level import made `pylon --version`,
`pylon keys ...` and each `--help` pay for it. Commands call `load_settings` from here, which
imports pylon.ops.config on first use.

`--relay` "defaults" to whatever PYLON_HOME/config.toml or PYLON_RELAYS say, not to a
constant; help that shows the constant misleads. `effective(name)` puts a placeholder in a
help text and `PylonCommand` (cli.common) fills it in when help is printed: the settings are
read once per process, only for help, and never fatally (a broken config file is reported
when a command runs, not when help is printed).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from pylon.errors import PylonError

if TYPE_CHECKING:
    from pylon.ops.config import Settings

_PLACEHOLDER = re.compile(r"\{effective:(\w+)\}")


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """pylon.ops.config.load_settings, imported on first use (see the module's docstring)."""
    from pylon.ops.config import load_settings as load

    return load(overrides)


def configured_relays(relay: list[str] | None) -> list[str]:
    """The `--relay` flags, else the configured relays."""
    return load_settings({"relays": relay or None}).relays


@functools.lru_cache(maxsize=1)
def _settings() -> dict[str, Any]:
    from pylon.ops.config import Settings

    try:
        return load_settings().model_dump()
    except PylonError:
        return Settings().model_dump()


def effective(name: str) -> str:
    """A placeholder for the setting `name` in a help text; `fill_effective` replaces it."""
    return f"{{effective:{name}}}"


def _shown(name: str) -> str:
    """The setting `name` as help shows it: lists comma-joined, numbers with :g."""
    value = _settings().get(name)
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def fill_effective(text: str) -> str:
    """`text` with every `effective(name)` placeholder replaced by the setting's current value."""
    return _PLACEHOLDER.sub(lambda m: _shown(m.group(1)), text) if "{effective:" in text else text
