"""Share an optimized program on Nostr and load it elsewhere: the program hub (NIP-78).

Optimizes a small QA program (LabeledFewShot: demos from the trainset), saves it the DSPy
way, publishes the saved state as a signed kind-30078 event, then loads it back by name and
author into a fresh program (`dsrs_bridge.programs.load` -> `program.load_state`) and asks
it one question over the swarm.

    python examples/program_hub.py --relay ws://127.0.0.1:7777
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from dsrs_bridge.programs import load, publish_program  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402

TRAIN = [("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, version={"default": "1.0.0"})
    keys = Keys.generate()  # the optimizer's identity (use your own: pylon keys)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in TRAIN]
    compiled = dspy.LabeledFewShot(k=2).compile(dspy.Predict("question -> answer"), trainset=trainset)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qa.json"
        compiled.save(str(path))
        state = json.loads(path.read_text())
    record = asyncio.run(publish_program(keys, args.relays, "examples/qa", state, version=args.version,
                                         metric="exact_match", score=1.0, models=[args.model]))
    print(f"published examples/qa {record.version} as {record.event_id}")
    fresh = dspy.Predict("question -> answer")
    fresh.load_state(load("examples/qa", author=keys.npub, relays=args.relays))
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet), cache=False)
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            answer = fresh(question="What is the capital of Italy?").answer
        print(f"loaded {len(fresh.demos)} demos from the hub; answer: {answer}")
        return report("program_hub", lm, sw.seconds, event_id=record.event_id, demos=len(fresh.demos),
                      answer=answer)
    finally:
        close(lm)


if __name__ == "__main__":
    main()
