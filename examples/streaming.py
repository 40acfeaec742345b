"""Tokens as they arrive: dspy.streamify over the swarm, fed by the provider's `partial` feedback.

    python examples/streaming.py --relay ws://127.0.0.1:7777 "Tell me about relays"
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import aclose, pylon_lm  # noqa: E402


async def run(args) -> dict[str, Any]:
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet),
                  max_msat_per_call=args.max_msat, cache=False)
    program = dspy.streamify(dspy.Predict("question -> answer"),
                             stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")])
    chunks: list[str] = []
    final = None
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw:
            async for item in program(question=args.question):
                if isinstance(item, dspy.streaming.StreamResponse):
                    chunks.append(item.chunk)
                    print(item.chunk, end="", flush=True)
                elif isinstance(item, dspy.Prediction):
                    final = item
        print()
        return report("streaming", lm, sw.seconds, chunks=len(chunks), answer=final.answer if final else None)
    finally:
        await aclose(lm)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, question={"nargs": "?", "default": "Tell me about relays"})
    return asyncio.run(run(args))


if __name__ == "__main__":
    main()
