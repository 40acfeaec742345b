"""Money-safe defaults for everything that pays (issue 10): what a customer agrees to when it
said nothing.

A wallet given without a cap used to mean "pay whatever is asked". Now every paying command
(`pylon ask`, `PylonClient`, the DSPy bridge through PylonClient) has a per-job cap and a
daily budget unless the user sets others, by flag, config key or environment variable:

    setting             flag                   config key / env                       default
    per-job cap         --max-msat N           max_msat / PYLON_MAX_MSAT              10,000 msat (10 sat)
    daily budget        --daily-budget-msat N  daily_budget_msat / PYLON_DAILY_...    100,000 msat (100 sat)

A quote above a limit is refused (nothing paid) with a message that names the flag and key
that raise it (`REFUSAL_HINTS`). No imports: config, client and CLI all read these numbers.
"""

from __future__ import annotations

from typing import Final

DEFAULT_MAX_MSAT: Final = 10_000
"""Per-job cap when none is given: 10 sat, a few times the price of a short answer today."""

DEFAULT_DAILY_BUDGET_MSAT: Final = 100_000
"""Daily budget (UTC day, all asks sharing PYLON_HOME's ledger) when none is given: 100 sat."""

MAX_MSAT_HINT: Final = "raise the per-job cap with --max-msat N (config key max_msat, env PYLON_MAX_MSAT)"
DAILY_HINT: Final = ("raise the daily budget with --daily-budget-msat N (config key daily_budget_msat, "
                     "env PYLON_DAILY_BUDGET_MSAT) or wait for the next UTC day")
SESSION_HINT: Final = ("the session budget is spent: raise it where it was set (`budget_msat=` of a pylon_lm, "
                       "`budget_msat=` of a PylonClient) or start a new session")
BID_HINT: Final = "raise the bid with --bid-msat N (it may not exceed --max-msat)"
