"""Predict over the swarm: one question, answered by a provider as a NIP-90 job.

    python examples/simple_qa.py --relay ws://127.0.0.1:7777 --model tiny-llama "What is Nostr?"
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, question={"nargs": "?", "default": "What is Nostr?"})
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet),
                  max_msat_per_call=args.max_msat, cache=False)
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            answer = dspy.Predict("question -> answer")(question=args.question).answer
        print(answer)
        job = lm.history[-1]["response"].provider_data["pylon"]
        print(f"job {job['job_id']} answered by {job['provider'][:16]}…")
        return report("simple_qa", lm, sw.seconds, answer=answer, job_id=job["job_id"])
    finally:
        close(lm)


if __name__ == "__main__":
    main()
