"""BootstrapFewShot with the swarm as the task LM, spending capped by a budget; the
receipts (msats in each call's provider data) are summed at the end.

    python examples/optimize.py --relay ws://127.0.0.1:7777 --wallet dev://... --budget-msat 20000
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, hub_of, pylon_lm  # noqa: E402

TRAIN = [
    ("What is the capital of France?", "Paris"),
    ("What is 2 + 2?", "4"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Which planet is called the red planet?", "Mars"),
    ("How many legs does a spider have?", "8"),
]


def any_answer(example, prediction, trace=None) -> bool:
    """A lenient metric: the tiny local model rarely knows facts; any non-empty answer counts."""
    return bool(str(getattr(prediction, "answer", "")).strip())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, budget_msat={"type": int, "default": 20_000})
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet),
                  max_msat_per_call=args.max_msat, budget_msat=args.budget_msat, cache=False)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in TRAIN]
    student = dspy.Predict("question -> answer")
    optimizer = dspy.BootstrapFewShot(metric=any_answer, max_bootstrapped_demos=2, max_labeled_demos=2,
                                      max_rounds=1)
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            compiled = optimizer.compile(student, trainset=trainset)
            answer = compiled(question="What is the capital of Italy?").answer
        hub = hub_of(lm)
        demos = len(compiled.demos)
        print(f"compiled with {demos} demos; answer: {answer}")
        print(f"receipts: {hub.spent_msat} msat spent of a {args.budget_msat} msat budget")
        return report("optimize", lm, sw.seconds, demos=demos, spent_msat=hub.spent_msat,
                      budget_msat=args.budget_msat)
    finally:
        close(lm)


if __name__ == "__main__":
    main()
