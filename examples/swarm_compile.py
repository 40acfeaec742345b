"""SwarmCompiler: bootstrap demos on the cheap swarm, validate the candidates on a premium
LM, keep the best by the premium score, and print what each phase cost against running it
all on the premium LM.

    python examples/swarm_compile.py --relay ws://127.0.0.1:7777 --model tiny-llama \\
        --premium-provider npub1... --budget-msat 50000
    # or a premium OpenAI-compatible endpoint, priced per 1k tokens in msat:
    python examples/swarm_compile.py --premium-url https://api.example/v1 --premium-model gpt-x \\
        --premium-msat-per-1k 3000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

import dsrs_bridge  # noqa: E402
from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402

TRAIN = [("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4"),
         ("Which planet is called the red planet?", "Mars")]


def any_answer(example: Any, prediction: Any, trace: Any = None) -> bool:
    """Lenient: the tiny local model rarely knows facts; any non-empty answer counts."""
    return bool(str(getattr(prediction, "answer", "")).strip())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, budget_msat={"type": int, "default": 50_000},
                      premium_provider={"default": None}, premium_url={"default": None},
                      premium_model={"default": None}, premium_msat_per_1k={"type": float, "default": None})
    wallet = open_wallet(args.wallet)
    swarm_lm = pylon_lm(args.model, relays=args.relays, wallet=wallet, max_msat_per_call=args.max_msat, cache=False)
    if args.premium_url:
        premium_lm = dspy.LM(f"openai/{args.premium_model or args.model}", api_base=args.premium_url,
                             api_key=os.environ.get("PREMIUM_API_KEY", "none"), cache=False)
    else:
        premium_lm = pylon_lm(args.model, relays=args.relays, wallet=wallet, provider=args.premium_provider,
                              max_msat_per_call=args.max_msat, cache=False)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in TRAIN]
    optimizer = dspy.BootstrapFewShot(metric=any_answer, max_bootstrapped_demos=1, max_labeled_demos=1,
                                      max_rounds=1)
    try:
        with dspy.context(adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            compiled, cost = dsrs_bridge.compile(dspy.Predict("question -> answer"), trainset, any_answer,
                                                 swarm_lm=swarm_lm, premium_lm=premium_lm,
                                                 budget_msat=args.budget_msat, optimizer=optimizer,
                                                 premium_msat_per_1k_tokens=args.premium_msat_per_1k)
        out = cost.to_dict()
        print(f"chose candidate {cost.chosen} ({len(compiled.demos)} demos) of {len(cost.candidates)} validated")
        print(f"optimize: {cost.optimize.msat} msat, {cost.optimize.tokens} tokens; validate: "
              f"{cost.validate.msat} msat, {cost.validate.tokens} tokens; premium-only would be "
              f"{cost.premium_only_msat} msat ({out['saving']:.1%} saved)")
        return report("swarm_compile", swarm_lm, sw.seconds, cost=out, demos=len(compiled.demos))
    finally:
        close(swarm_lm)
        if not args.premium_url:  # a pylon_lm of its own
            close(premium_lm)


if __name__ == "__main__":
    main()
