"""A two-module program, recorded as a DAG, its trace published to the relays and shown.

    python examples/multi_step.py --relay ws://127.0.0.1:7777
    pylon trace show <printed root event id> --relay ws://127.0.0.1:7777
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from dsrs_bridge.nostr_trace import fetch_trace, publish_trace  # noqa: E402
from dsrs_bridge.recorder import record  # noqa: E402


class Outline(dspy.Module):
    def __init__(self):
        super().__init__()
        self.plan = dspy.Predict("topic -> outline")

    def forward(self, topic):
        return self.plan(topic=topic)


class Essay(dspy.Module):
    """Outline first (one module), then write from the outline (another)."""

    def __init__(self):
        super().__init__()
        self.outline = Outline()
        self.write = dspy.ChainOfThought("topic, outline -> paragraph")

    def forward(self, topic):
        o = self.outline(topic=topic)
        return self.write(topic=topic, outline=o.outline)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from cli.trace_cmd import render_tree
    from pylon.home import identity_path
    from pylon.nostr.keys import Keys
    from rich.console import Console

    args = parse_args(__doc__, argv, topic={"nargs": "?", "default": "paying for inference with Lightning"})
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet),
                  max_msat_per_call=args.max_msat, cache=False)
    program = Essay()
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw, record(program) as graph:
            result = program(topic=args.topic)
    finally:
        close(lm)
    print(result.paragraph)
    keys = Keys.load_or_create(identity_path())
    root_id = asyncio.run(publish_trace(graph, args.relays, keys))
    fetched = asyncio.run(fetch_trace(root_id, args.relays))
    Console().print(render_tree(fetched))
    print(f"trace root event: {root_id}")
    return report("multi_step", lm, sw.seconds, root_event_id=root_id, nodes=len(fetched.nodes),
                  trace_msat=fetched.total_msat())


if __name__ == "__main__":
    main()
