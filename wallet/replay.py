"""A rolling replay window for signed requests, by event id and created_at.

The NWC service must answer each request once. It used to remember every id in a set
wiped whole at 100,000 entries, after which any old request could be replayed. Here:

- ids are remembered for `window_s` after they arrive, in arrival order, and forgotten
  oldest first (by age, or past `max_ids`);
- a request whose created_at is older than the window (or older than the newest id ever
  forgotten, the "horizon") is refused: its id may no longer be remembered, so it is not
  checkable; honest clients sign requests when they send them;
- a request dated more than `future_s` ahead is refused too (it would outlive the window);
  one dated ahead within `future_s` moves the horizon past its created_at when its id is
  forgotten, since "too old" alone would not cover it yet.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class ReplayWindow:
    def __init__(self, window_s: float = 600.0, max_ids: int = 200_000, future_s: float = 600.0) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self.future_s = future_s
        self._ids: OrderedDict[str, tuple[float, int]] = OrderedDict()  # id -> (arrival (wall clock), created_at)
        self.horizon = 0.0  # created_at before this is refused (past every forgotten id: arrival, or _past)

    def __len__(self) -> int:
        return len(self._ids)

    def check(self, event_id: str, created_at: int, now: float | None = None) -> str | None:
        """None for a new, checkable request (now remembered); else why it is refused."""
        now = time.time() if now is None else now
        self._forget(now)
        if event_id in self._ids:
            return "replayed"
        if created_at < max(now - self.window_s, self.horizon):
            return "too old"
        if created_at > now + self.future_s:
            return "dated in the future"
        self._ids[event_id] = (now, created_at)
        if len(self._ids) > self.max_ids:
            _, (arrived, created) = self._ids.popitem(last=False)
            self.horizon = max(self.horizon, arrived)
            self._past(arrived, created)
        return None

    def _past(self, arrived: float, created_at: int) -> None:
        """A forgotten id dated after it arrived stays refused: the horizon moves past it."""
        if created_at > arrived:
            self.horizon = max(self.horizon, created_at + 1)

    def _forget(self, now: float) -> None:
        ids = self._ids
        cutoff = now - self.window_s
        while ids:
            arrived, created = next(iter(ids.values()))
            if arrived >= cutoff:
                return
            ids.popitem(last=False)
            self._past(arrived, created)
