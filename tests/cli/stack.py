"""A local stack for CLI tests, every part a real process or server: the embedded relay (the
`relay_url` fixture), a backend (the OpenAI DOUBLE or the CPU vLLM), `pylon serve` as a
subprocess, and `pylon ...` commands run as subprocesses with their own PYLON_HOME."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from pylon.nostr.keys import Keys

PYLON = str(Path(sys.executable).parent / "pylon")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: no PYLON_* from the outside, its own PYLON_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYLON_") and k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "TTY_COMPATIBLE")}
    env["PYLON_HOME"] = str(home)
    env.update(extra)
    return env


async def pylon(*args: str, home: Path, stdin: bytes | None = None, timeout: float = 120,
                env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `pylon ARGS` to completion: (exit code, stdout, stderr). stdin is /dev/null unless given."""
    proc = await asyncio.create_subprocess_exec(
        PYLON, *args, env=env or cli_env(home),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


@dataclass
class Stack:
    relay_url: str
    home: Path  # the customer's PYLON_HOME
    provider_keys: Keys
    serve_out: list[str] = field(default_factory=list)

    async def ask(self, *args: str, stdin: bytes | None = None, **extra_env: str) -> tuple[int, str, str]:
        env = cli_env(self.home, PYLON_RELAYS=self.relay_url, **extra_env)
        return await pylon("ask", *args, home=self.home, stdin=stdin, env=env)

    async def run(self, *args: str, stdin: bytes | None = None, **extra_env: str) -> tuple[int, str, str]:
        env = cli_env(self.home, PYLON_RELAYS=self.relay_url, **extra_env)
        return await pylon(*args, home=self.home, stdin=stdin, env=env)


@contextlib.asynccontextmanager
async def serving(relay_url: str, backend_url: str, tmp_path: Path, *serve_args: str) -> AsyncIterator[Stack]:
    """`pylon serve --free` on the relay in front of the backend, until the block ends."""
    provider_home = tmp_path / "provider-home"
    provider_home.mkdir(parents=True, exist_ok=True)
    keys = Keys.generate()
    keys.save(provider_home / "identity.key")
    proc = await asyncio.create_subprocess_exec(
        PYLON, "serve", "--free", "--relay", relay_url, "--backend", backend_url, *serve_args,
        env=cli_env(provider_home), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stack = Stack(relay_url, tmp_path / "customer-home", keys)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
        assert line.startswith(f"serving as {keys.npub}"), line + (await proc.stderr.read(4000)).decode()
        stack.serve_out.append(line)
        yield stack
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
