"""Where `pylon ask` gets its prompt: the argument, stdin, or both; system prompts; templates.

Like `llm`: a prompt can be the argument (`pylon ask "hi"`), piped (`echo hi | pylon ask`),
or both (`cat notes.txt | pylon ask "summarise this"`: the piped text first, then the
argument, separated by a blank line). `-` as the argument reads stdin explicitly.

Templates are saved prompts in PYLON_HOME/templates/NAME.toml:

    system = "You are a terse assistant."
    prompt = "Summarise this:\\n\\n$input"     # $input: the prompt given to `ask`
    model = "tiny-llama"                      # optional defaults for ask's flags
    max_tokens = 200
    temperature = 0.2

`pylon template save NAME --system ... --prompt ...` writes one; flags given to `ask`
override the template's values.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, TextIO

from pylon.errors import ConfigError
from pylon.home import pylon_home

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TEMPLATE_KEYS = {"system": str, "prompt": str, "model": str, "max_tokens": int, "temperature": float}


def stdin_has_input(stream: TextIO | None = None) -> bool:
    """True when stdin is a pipe or a file (not a terminal, not /dev/null or a closed fd)."""
    stream = stream or sys.stdin
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def read_prompt(argument: str | None, stream: TextIO | None = None) -> str:
    """The prompt from the argument and/or piped stdin (piped text first); ConfigError if none."""
    stream = stream or sys.stdin
    if argument == "-":
        text = _read(stream)
        if not text.strip():
            raise ConfigError("no prompt: '-' reads the prompt from stdin, and stdin was empty")
        return text
    piped = _read(stream) if stdin_has_input(stream) else ""
    parts = [p for p in (piped.rstrip("\n"), _text(argument, "the prompt") if argument else argument)
             if p and p.strip()]
    if not parts:
        raise ConfigError("no prompt given", hint='pass it as an argument (pylon ask "...") or pipe it '
                                                   "(echo ... | pylon ask)")
    return "\n\n".join(parts)


def _read(stream: TextIO) -> str:
    """All of stdin as text (whichever way this Python decodes it: strictly, or with lone
    surrogates for the bytes that are not UTF-8)."""
    try:
        text = stream.read()
    except UnicodeDecodeError:
        raise _not_text("stdin") from None
    return _text(text, "stdin")


def _text(value: str, where: str) -> str:
    """`value` if it is text: bytes that are not UTF-8 arrive as lone surrogates (Python's
    surrogateescape for stdin and argv), which no event can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _not_text(where) from None
    return value


def _not_text(where: str) -> ConfigError:
    return ConfigError(f"{where} is not UTF-8 text (binary data?)",
                       hint="pipe text; for a file in another encoding, convert it first (iconv -t UTF-8)")


@dataclass
class PromptTemplate:
    """A saved prompt: a system message, a prompt with `$input`, and default flags."""

    name: str
    system: str | None = None
    prompt: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def render(self, user_input: str) -> str:
        """The user message: the template's prompt with `$input` replaced (the input is
        appended after a blank line when the template has no `$input`)."""
        if not self.prompt:
            return user_input
        if "$input" in self.prompt or "${input}" in self.prompt:
            return Template(self.prompt).safe_substitute(input=user_input)
        return f"{self.prompt}\n\n{user_input}" if user_input else self.prompt

    def to_toml(self) -> str:
        lines = [f"# pylon prompt template {self.name!r}: `pylon ask --template {self.name} ...`"]
        for key in TEMPLATE_KEYS:
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    return repr(value)


def templates_dir() -> Path:
    return pylon_home() / "templates"


def template_path(name: str) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"invalid template name {name!r}",
                          hint="use letters, digits, '.', '_' or '-' (at most 64 characters)")
    return templates_dir() / f"{name}.toml"


def load_template(name: str) -> PromptTemplate:
    """Read PYLON_HOME/templates/NAME.toml; ConfigError naming the problem otherwise."""
    path = template_path(name)
    if not path.exists():
        known = ", ".join(list_templates()) or "none saved yet"
        raise ConfigError(f"no template named {name!r} ({known})",
                          hint=f"save one with `pylon template save {name} --prompt '...'`")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"template {path} cannot be read: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        kind = TEMPLATE_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"template {path}: unknown key {key!r} (known: {', '.join(TEMPLATE_KEYS)})")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"template {path}: {key} must be a {kind.__name__}")
        values[key] = value
    return PromptTemplate(name=name, **values)


def save_template(template: PromptTemplate) -> Path:
    path = template_path(template.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(template.to_toml())
    return path


def list_templates() -> list[str]:
    folder = templates_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def build_messages(prompt: str, system: str | None) -> str | list[dict[str, str]]:
    """A plain prompt, or system + user chat messages when there is a system prompt."""
    if system:
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return prompt
