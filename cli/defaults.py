"""Effective defaults for help texts: what a flag falls back to on this machine right now.

Why: `--relay` "defaults" to whatever PYLON_HOME/config.toml or PYLON_RELAYS say, not to a
constant; help that shows the constant misleads. Read once per process, and never fatal:
a broken config file is reported when a command runs, not when help is printed.
"""

from __future__ import annotations

import functools
from typing import Any

from pylon.errors import PylonError
from pylon.ops.config import Settings, load_settings


@functools.lru_cache(maxsize=1)
def _settings() -> dict[str, Any]:
    try:
        return load_settings().model_dump()
    except PylonError:
        return Settings().model_dump()


def effective(name: str) -> str:
    """The setting `name` as help shows it: lists comma-joined, numbers with :g."""
    value = _settings().get(name)
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)
