"""dspy.ReAct with two Python tools; every LM call (each ReAct step, the extraction) is a
swarm job, paid when the provider asks for it.

    python examples/agent_tools.py --relay ws://127.0.0.1:7777 --wallet dev://... --max-msat 2000
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402

CALLS: list[str] = []


def word_count(text: str) -> int:
    """Count the words in a text."""
    CALLS.append("word_count")
    return len(text.split())


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    CALLS.append("multiply")
    return a * b


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, question={"nargs": "?",
                                               "default": "How many words are in 'pay per token', times three?"})
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet),
                  max_msat_per_call=args.max_msat, cache=False)
    agent = dspy.ReAct("question -> answer", tools=[word_count, multiply], max_iters=4)
    CALLS.clear()
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            result = agent(question=args.question)
        print(result.answer)
        print(f"tools called: {', '.join(CALLS) or 'none'}; LM calls: {len(lm.history)}")
        return report("agent_tools", lm, sw.seconds, answer=result.answer, tools=list(CALLS),
                      lm_calls=len(lm.history))
    finally:
        close(lm)


if __name__ == "__main__":
    main()
