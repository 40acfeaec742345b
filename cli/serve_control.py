"""Controlling a running `pylon serve` with signals, and `pylon serve pause|resume|reload|status`.

    SIGTERM / SIGINT   drain, then exit (a second one: exit at once)  -- pylon.provider.drain
    SIGUSR1            pause: stop taking jobs and withdraw the announcement; running jobs finish
    SIGUSR2            resume: take jobs again and announce
    SIGHUP             reload config.toml: prices, models, relays announced again, no job dropped

`pylon serve pause` (etc.) finds the running provider through PYLON_HOME/serve.lock (the pid of
the process holding the lock, pylon.ops.home_lock) and sends it the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any, Awaitable, Callable

from pylon.errors import ConfigError
from pylon.ops.home_lock import holder_pid
from pylon.provider.drain import PAUSED_REASON, close_intake, open_intake

log = logging.getLogger("pylon.serve")

ACTIONS: dict[str, signal.Signals] = {"pause": signal.SIGUSR1, "resume": signal.SIGUSR2, "reload": signal.SIGHUP}


class ServeControl:
    """Signal handlers of one `pylon serve` process (installed inside its event loop)."""

    def __init__(self, provider: Any, reload: Callable[[], Awaitable[None]] | None = None) -> None:
        self.provider = provider
        self.reload = reload
        self._tasks: set[asyncio.Task] = set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGUSR1, self._pause), (signal.SIGUSR2, self._resume),
                             (signal.SIGHUP, self._reload)):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._spawn, handler)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _spawn(self, handler: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(handler: Callable[[], Awaitable[None]]) -> None:
        try:
            await handler()
        except Exception as exc:  # a control signal never takes the provider down
            log.error("control signal failed: %s", exc)

    async def _pause(self) -> None:
        if self.provider.accepting:
            log.warning("paused: no new jobs, announcement withdrawn; running jobs finish (resume: pylon serve resume)")
            await close_intake(self.provider, PAUSED_REASON)

    async def _resume(self) -> None:
        if not self.provider.accepting:
            await open_intake(self.provider)

    async def _reload(self) -> None:
        if self.reload is None:
            log.warning("SIGHUP: nothing to reload")
            return
        await self.reload()


def signal_running(action: str) -> int:
    """Send `action`'s signal to the `pylon serve` holding this PYLON_HOME; returns its pid."""
    sig = ACTIONS.get(action)
    if sig is None:
        raise ConfigError(f"unknown serve action {action!r}: use pause, resume, reload or status")
    pid = holder_pid()
    if pid is None:
        raise ConfigError("no pylon serve is running on this PYLON_HOME",
                          hint="start one with `pylon serve`, or set PYLON_HOME to the provider's folder")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise ConfigError(f"the pylon serve holding the lock (pid {pid}) is gone") from None
    except PermissionError:
        raise ConfigError(f"not allowed to signal the pylon serve with pid {pid} (another user?)") from None
    return pid
