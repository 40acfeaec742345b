"""Streaming through DSPy: time to first chunk and chunks per answer, Pylon vs straight to vLLM.

    .venv/bin/python bench/dspy_stream.py [--runs 8] [--max-tokens 195] [--intervals 250,50,0]
                                          [--backend URL --model NAME]

One CPU vLLM (the tiny random Llama; or --backend), an in-process embedded relay, and an
in-process Provider per partial interval. Each run streams one answer through
`dspy.streamify` (a module that calls the LM directly, so the random model's text needs no
parsing) and records when the first chunk with text arrived and how many chunks came:

- direct: `dspy.LM("openai/<model>", api_base=<vLLM>)`, DSPy's own engine, SSE from vLLM;
- pylon, interval N ms: `pylon_lm(<model>)` through the relay and a Provider whose partials
  are coalesced every N ms (250 = the old fixed interval; the first token always goes out
  at once since issue 19, except that the "250 (old)" row also delays the first token the way
  the old code did).

Prints medians per mode and the difference against direct measured in the same run. Runs are
interleaved so load on the shared cores hits every mode alike. Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy  # noqa: E402

from dsrs_bridge.lm import pylon_lm  # noqa: E402
from nexus_relay import running_relay  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.backends.openai import OpenAIBackend  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402


class RawCall(dspy.Module):
    """Calls the LM directly: streamify yields its raw chunks, nothing is parsed."""

    def forward(self, question: str) -> dspy.Prediction:
        return dspy.Prediction(answer=dspy.settings.lm(question)[0])


class _OldCoalescer:
    """The partials as they were before issue 19: the clock starts with the request, so even
    the first token waits for the interval."""

    def __init__(self, interval_s: float, max_chars: int) -> None:
        from pylon.provider.partials import PartialCoalescer

        self._inner = PartialCoalescer(interval_s, max_chars)
        self._inner._last = time.monotonic()

    def push(self, text: str, now: float):
        return self._inner.push(text, now)


class OldFirstToken(Provider):
    """A Provider whose partials behave as before issue 19 (runs are sequential: the swap is safe)."""

    async def _generate(self, job):  # type: ignore[override]
        import pylon.provider.provider as module

        original = module.PartialCoalescer
        module.PartialCoalescer = _OldCoalescer  # type: ignore[misc, assignment]
        try:
            return await super()._generate(job)
        finally:
            module.PartialCoalescer = original  # type: ignore[misc]


async def stream_once(lm: Any, question: str) -> tuple[float, int, float]:
    program = dspy.streamify(RawCall())
    t0 = time.perf_counter()
    first = None
    chunks = 0
    with dspy.context(lm=lm):
        async for item in program(question=question):
            if isinstance(item, dspy.Prediction):
                continue
            text = item.choices[0].delta.content if getattr(item, "choices", None) else None
            if text:
                chunks += 1
                if first is None:
                    first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (first if first is not None else total), chunks, total


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=195)
    ap.add_argument("--intervals", default="250,50,0", help="partial intervals in ms to compare")
    ap.add_argument("--backend", help="an OpenAI-compatible base URL instead of starting the CPU vLLM")
    ap.add_argument("--model", default="tiny-llama")
    args = ap.parse_args()
    vllm = None
    if args.backend:
        base_url = args.backend
    else:
        from pylon.devstack.vllm import start_vllm

        vllm = start_vllm()
        base_url, args.model = vllm.base_url, vllm.model
    intervals = [int(x) for x in args.intervals.split(",") if x.strip()]
    results: dict[str, list[tuple[float, int, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_relay(Path(tmp) / "relay.sqlite") as relay, AsyncExitStack() as stack:
                backend = OpenAIBackend(base_url)
                modes: dict[str, Any] = {
                    "direct vLLM": dspy.LM(f"openai/{args.model}", api_base=base_url, api_key="none", cache=False,
                                           max_tokens=args.max_tokens, temperature=0.0)}
                for ms in intervals:
                    for old in ([True, False] if ms == 250 else [False]):
                        cls = OldFirstToken if old else Provider
                        p = cls([relay.url], backend, keys=Keys.generate(), models=[args.model],
                                partial_interval_s=ms / 1000, db_path=Path(tmp) / f"p{ms}{old}.sqlite")
                        await stack.enter_async_context(p.running())
                        label = f"pylon, {ms} ms" + (" (old: first token waits too)" if old else "")
                        modes[label] = pylon_lm(args.model, relays=[relay.url], keys=Keys.generate(), cache=False,
                                                provider=p.keys.public_key, encrypted=False, timeout=120,
                                                max_tokens=args.max_tokens, temperature=0.0)
                for label, lm in modes.items():  # warm up every path once
                    await stream_once(lm, "warm up")
                for run in range(args.runs):
                    for label, lm in modes.items():
                        results.setdefault(label, []).append(await stream_once(lm, f"Tell me about relays, {run}"))
                for label, lm in modes.items():
                    if label != "direct vLLM":
                        await lm.aclose()
            await backend.aclose()
    finally:
        if vllm is not None:
            vllm.stop()
    base = statistics.median(r[0] for r in results["direct vLLM"])
    print(f"\nDSPy streamify, {args.runs} runs per mode, max_tokens={args.max_tokens}, model {args.model}")
    print(f"{'mode':44} {'first chunk ms':>15} {'vs direct':>10} {'chunks':>7} {'total ms':>9}")
    for label, rows in results.items():
        first = statistics.median(r[0] for r in rows)
        print(f"{label:44} {first * 1000:15.1f} {((first - base) * 1000):+9.1f}  "
              f"{statistics.median(r[1] for r in rows):7.0f} {statistics.median(r[2] for r in rows) * 1000:9.1f}")


if __name__ == "__main__":
    asyncio.run(main())
