"""The customer's clock, and the one warning about it.

NIP-90 replies are routed by the job id, not by time, so the client's subscription carries no
`since` from the local clock (a clock 10 minutes ahead used to miss every reply published
"before" it). The clock still stamps requests (`created_at`): a provider drops requests
outside its intake window (pylon.provider: `INTAKE_SKEW_S`, 15 minutes either way), and relays
refuse events too far in the future. So the client compares the stamps of the live events it
receives with its clock and warns once when they disagree by more than `SKEW_WARN_S`.

Test hook: `PYLON_CLOCK_OFFSET_S` (seconds, may be negative) shifts this clock for a whole
process, so the fault suite can run a `pylon ask` 10 minutes ahead or behind; a library caller
passes `PylonClient(clock=...)` instead. Not meant for users.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

log = logging.getLogger("pylon.customer.clock")

SKEW_WARN_S = 60
CLOCK_OFFSET_ENV = "PYLON_CLOCK_OFFSET_S"


def default_clock() -> Callable[[], float]:
    """time.time, shifted by PYLON_CLOCK_OFFSET_S when the test hook is set."""
    raw = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
    if not raw:
        return time.time
    try:
        offset = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number of seconds; ignored", CLOCK_OFFSET_ENV, raw)
        return time.time
    return lambda: time.time() + offset


class SkewWatch:
    """Warns once when live events' created_at disagree with our clock by more than SKEW_WARN_S."""

    def __init__(self, clock: Callable[[], float], *, limit_s: float = SKEW_WARN_S) -> None:
        self.clock = clock
        self.limit_s = limit_s
        self.warned = False
        self.skew_s: float | None = None

    def observe(self, created_at: int) -> None:
        if self.warned:
            return
        skew = self.clock() - created_at
        if abs(skew) > self.limit_s:
            self.warned = True
            self.skew_s = skew
            log.warning("this machine's clock is %+.0f s off the events from the relays (more than %d s): "
                        "requests may be ignored by providers; set the clock (NTP)", skew, self.limit_s)
