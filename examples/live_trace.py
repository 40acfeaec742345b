"""Watch a program run: record it with record_live, which publishes each node's start and
end as ephemeral Nostr events (kind 23571) while it runs. In another terminal:

    pylon trace watch --relay ws://127.0.0.1:7777 --author <the npub this prints>
    python examples/live_trace.py --relay ws://127.0.0.1:7777
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from dsrs_bridge.live import record_live  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv)
    keys = Keys.generate()  # the publishing identity (use yours: pylon keys)
    print(f"watch with: pylon trace watch --author {keys.npub}")
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet), cache=False)
    program = dspy.ChainOfThought("question -> answer")
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw, \
                record_live(program, relays=args.relays, keys=keys) as graph:
            answer = program(question="What is a relay?").answer
        print(f"answer: {answer}")
        return report("live_trace", lm, sw.seconds, nodes=len(graph.nodes), author=keys.npub, answer=answer)
    finally:
        close(lm)


if __name__ == "__main__":
    main()
