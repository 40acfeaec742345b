"""Shared plumbing for the examples: which relays, model and wallet to use, and a receipt line.

Every example runs against the local stack the README starts (`pylon relay`, `pylon serve`
next to a backend). Relays come from --relay or PYLON_RELAYS (default ws://127.0.0.1:7777),
the model from --model or PYLON_MODEL, the wallet from --wallet or PYLON_WALLET (optional:
free providers need none).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any


def parse_args(description: str, argv: list[str] | None = None, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--relay", action="append", help="relay URL (repeatable)")
    parser.add_argument("--model", default=os.environ.get("PYLON_MODEL", "tiny-llama"))
    parser.add_argument("--wallet", default=os.environ.get("PYLON_WALLET"), help="wallet URI (optional)")
    parser.add_argument("--max-msat", type=int, default=None, help="most one call may cost")
    for flag, kwargs in extra.items():
        positional = "nargs" in kwargs  # e.g. the question: `simple_qa.py "What is Nostr?"`
        parser.add_argument(flag if positional else f"--{flag.replace('_', '-')}", **kwargs)
    args = parser.parse_args(argv)
    env = [u.strip() for u in os.environ.get("PYLON_RELAYS", "").split(",") if u.strip()]
    args.relays = args.relay or env or ["ws://127.0.0.1:7777"]
    return args


def open_wallet(uri: str | None):
    if not uri:
        return None
    from wallet import open_wallet as _open

    return _open(uri)


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def report(name: str, lm: Any, seconds: float, **fields: Any) -> dict[str, Any]:
    """Print and return what the run cost (msats from the calls' provider data) and took."""
    from dsrs_bridge.lm import history_msat, hub_of

    hub = hub_of(lm)
    out = {"example": name, "msat": history_msat(lm), "jobs": hub.jobs_started, "seconds": round(seconds, 3),
           **fields}
    print(f"{name}: {out['msat']} msat over {out['jobs']} jobs in {seconds:.2f} s")
    return out
