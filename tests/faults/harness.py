"""The fault suite's bookkeeping: what every scenario counts and the money rules it asserts.

Each scenario asks N jobs while one fault is injected (a relay, provider, backend or customer
killed; a skewed clock; many processes on one PYLON_HOME) and then checks, whatever happened:

* every ask ended with an answer or a clean error (a PylonError / one red CLI line, never a
  traceback or a hang);
* the customer's wallet lost exactly what the provider's wallet gained (dev wallet: no fees);
* every msat paid for an ask that got no answer came back as a refund (or was never taken):
  the provider's net gain equals what the answered asks cost.

`Tally.line()` is the figure the issue asks for: asked / answered / failed cleanly / paid
without answer (after refunds). Print it with `-s` to read the figures of a run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYLON = str(Path(sys.executable).parent / "pylon")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `pylon` child process: its own PYLON_HOME, nothing else of ours."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_")}
    env.update(PYLON_HOME=str(home), COLUMNS="200", **extra)
    return env


@dataclass
class Tally:
    """The outcome of one scenario's asks."""

    scenario: str
    asked: int = 0
    answered: int = 0
    failed_cleanly: int = 0
    unclean: list[str] = field(default_factory=list)  # tracebacks, hangs: each one a test failure
    paid_msat: int = 0       # what the customer's wallet lost, net of refunds
    received_msat: int = 0   # what the provider's wallet gained, net of refunds
    answered_cost_msat: int = 0  # what the answered asks were quoted
    refunded: int = 0

    @property
    def paid_without_answer_msat(self) -> int:
        return self.paid_msat - self.answered_cost_msat

    def line(self) -> str:
        return (f"[faults] {self.scenario}: asked {self.asked} / answered {self.answered} / failed cleanly "
                f"{self.failed_cleanly} / paid without answer {self.paid_without_answer_msat} msat "
                f"(refunds {self.refunded}; customer paid {self.paid_msat}, provider received {self.received_msat})")

    def check(self) -> None:
        """The three rules every scenario asserts."""
        print(self.line())
        assert not self.unclean, f"{len(self.unclean)} asks did not end cleanly: {self.unclean[:3]}"
        assert self.answered + self.failed_cleanly == self.asked, self.line()
        assert self.paid_msat == self.received_msat, self.line()
        assert self.paid_without_answer_msat == 0, self.line()


def clean_cli_failure(code: int, err: str) -> bool:
    """A failed `pylon` run is clean when it says what happened in a line and shows no traceback."""
    return code != 0 and "Traceback" not in err and bool(err.strip())
