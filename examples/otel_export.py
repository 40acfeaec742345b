"""Record a two-level program on the swarm and export the run as OpenTelemetry spans
(GenAI semantic conventions), to an OTLP/JSON file any OTel tool can import.

    python examples/otel_export.py --relay ws://127.0.0.1:7777 --out trace.otlp.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dspy  # noqa: E402

from _stack import Stopwatch, open_wallet, parse_args, report  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from dsrs_bridge.otel import write_otlp_json  # noqa: E402
from dsrs_bridge.recorder import record  # noqa: E402


class Explain(dspy.Module):
    """Two levels: a summary, then an answer from it."""

    def __init__(self) -> None:
        super().__init__()
        self.summarize = dspy.Predict("question -> summary")
        self.answer = dspy.Predict("summary -> answer")

    def forward(self, question: str) -> Any:
        return self.answer(summary=self.summarize(question=question).summary)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__, argv, out={"default": "trace.otlp.json"})
    lm = pylon_lm(args.model, relays=args.relays, wallet=open_wallet(args.wallet), cache=False)
    program = Explain()
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()), Stopwatch() as sw, record(program) as graph:
            answer = program(question="What is a relay?").answer
        spans = write_otlp_json(graph, args.out)
        print(f"answer: {answer}; {spans} spans -> {args.out}")
        return report("otel_export", lm, sw.seconds, spans=spans, out=args.out)
    finally:
        close(lm)


if __name__ == "__main__":
    main()
