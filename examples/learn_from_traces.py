"""Learn from past runs: record a program on the swarm, publish its trace with the prompts
and outputs NIP-44-encrypted to your own key, fetch it back and turn its successful
predictor calls into a DSPy trainset (dsrs_bridge.extract).

    python examples/learn_from_traces.py --relay ws://127.0.0.1:7777
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.extract import fetch_examples  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from dsrs_bridge.nostr_trace import publish_trace  # noqa: E402
from dsrs_bridge.recorder import record  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402

QUESTIONS = ["What is a relay?", "What is a zap?", "What is a relay?"]  # one repeat: deduplicated


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv)
    keys = Keys.generate()  # use your own identity in practice (pylon keys)
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet), cache=False)
    qa = dspy.Predict("question -> answer")
    roots = []
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            for question in QUESTIONS:
                with record(qa, name="qa") as graph:
                    qa(question=question)
                roots.append(asyncio.run(publish_trace(graph, args.relays, keys, include_content=True,
                                                       encrypt_to=keys.public_key)))
        trainset = asyncio.run(fetch_examples(roots, args.relays, keys=keys))
        print(f"{len(roots)} traces published, {len(trainset)} examples learned:")
        for example in trainset:
            print(f"  {example.question} -> {example.answer}")
        return report("learn_from_traces", lm, sw.seconds, traces=len(roots), examples=len(trainset),
                      questions=[e.question for e in trainset])
    finally:
        close(lm)


if __name__ == "__main__":
    main()
