"""One log line per reason per interval, for problems a stranger can cause at will.

A client's bad input (or a slow reader) must never become thousands of tracebacks: each
reason is logged at most once per `interval` seconds, with how many were suppressed since.
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """`warn(key, msg, *args)`: log the first, then at most one per interval per key."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # keys are a fixed set of reasons; never let them grow
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            msg += " (%d more like this suppressed)"
            args = (*args, skipped)
        self.logger.warning(msg, *args)
