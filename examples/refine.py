"""Refine on the swarm: up to N attempts, each its own NIP-90 job (rollout ids are never
joined or cached), with advice between attempts; `--spread NPUB` (repeatable) sends the
attempts round-robin to those providers for diversity (dsrs_bridge.rollouts.spread_lm).

    python examples/refine.py --relay ws://127.0.0.1:7777 --n 3
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from dsrs_bridge.rollouts import spread_lm  # noqa: E402


def one_word(args: dict, pred: Any) -> float:
    """The reward: 1.0 for a one-word answer (the attempts stop at the threshold)."""
    return 1.0 if len(str(pred.answer).split()) == 1 else 0.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, n={"type": int, "default": 3}, spread={"action": "append", "default": None})
    common: dict[str, Any] = dict(relays=args.relays, wallet=open_wallet(args.wallet),
                                  max_msat_per_call=args.max_msat, cache=False)
    lm = spread_lm(args.model, providers=args.spread, **common) if args.spread else pylon_lm(args.model, **common)
    refine = dspy.Refine(dspy.Predict("question -> answer"), N=args.n, reward_fn=one_word, threshold=1.0)
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            answer = refine(question="Which planet is called the red planet? One word.").answer
        print(f"answer: {answer}")
        return report("refine", lm, sw.seconds, answer=answer)
    finally:
        close(lm)


if __name__ == "__main__":
    main()
