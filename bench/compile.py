"""SwarmCompiler: what optimizing on the cheap swarm and validating on a premium LM costs,
against running the same optimization on the premium LM alone (measured in the same run).

    .venv/bin/python bench/compile.py [--train 8] [--demos 4] [--cheap-msat 10] [--premium-msat 300]
                                      [--backend URL --model NAME]

One in-process embedded relay, a dev wallet, and two Providers on the same backend (the
OpenAI-compatible double from tests/peers, answering ChatAdapter prompts, by default; --backend for the tiny CPU vLLM,
whose random text rarely parses, so the double is the default): a cheap one and a premium
one, priced per job (a per-1k-token price is charged on max_tokens up front, which
would blur the comparison). Runs:

- swarm: `dsrs_bridge.compile(..., swarm_lm=<cheap>, premium_lm=<premium>)`;
- premium-only (the baseline): the same optimizer and validation with the premium provider
  as both LMs.

Prints msats and tokens per phase, the compiler's own counterfactual and the measured
premium-only cost, and the ratios. The cut is set by the price ratio and the share of the
run that validation takes (validation runs on the premium LM either way).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "dsrs"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

import dspy  # noqa: E402

import dsrs_bridge  # noqa: E402
from dsrs_bridge.lm import close, pylon_lm  # noqa: E402
from nexus_relay import running_relay  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.backends.openai import OpenAIBackend  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402

QUESTIONS = [("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4"),
             ("Which planet is called the red planet?", "Mars"), ("How many legs does a spider have?", "8"),
             ("What colour is the sky on a clear day?", "blue"), ("What is the largest ocean?", "Pacific"),
             ("Who wrote Hamlet?", "Shakespeare"), ("What is H2O?", "water"), ("What is 3 * 3?", "9"),
             ("What is the capital of Japan?", "Tokyo"), ("How many days are in a week?", "7"),
             ("What gas do plants absorb?", "CO2")]


def any_answer(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(str(getattr(prediction, "answer", "")).strip())


def run_compile(args: argparse.Namespace, relay: str, wallet: str, swarm: str, premium: str) -> Any:
    def lm(provider: str) -> Any:
        return pylon_lm(args.model, relays=[relay], keys=Keys.generate(), wallet=wallet, provider=provider,
                        max_msat_per_call=100_000, cache=False, timeout=60)

    swarm_lm, premium_lm = lm(swarm), lm(premium)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in QUESTIONS[: args.train]]
    optimizer = dspy.BootstrapFewShot(metric=any_answer, max_bootstrapped_demos=args.demos,
                                      max_labeled_demos=args.demos, max_rounds=1)
    try:
        with dspy.context(adapter=dspy.ChatAdapter()):
            _, report = dsrs_bridge.compile(dspy.Predict("question -> answer"), trainset, any_answer,
                                            swarm_lm=swarm_lm, premium_lm=premium_lm, budget_msat=10_000_000,
                                            optimizer=optimizer)
        return report
    finally:
        close(swarm_lm)
        close(premium_lm)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--demos", type=int, default=4)
    parser.add_argument("--cheap-msat", type=int, default=10, help="cheap provider, msat per job")
    parser.add_argument("--premium-msat", type=int, default=300, help="premium provider, msat per job")
    parser.add_argument("--backend", default=None, help="OpenAI-compatible URL (default: the chat double)")
    parser.add_argument("--model", default="double-model")
    args = parser.parse_args()

    from chat_double import chat_adapter_reply
    from tests.peers.openai_double import OpenAIDouble
    from wallet.dev import DevWallet, fund

    double = OpenAIDouble(reply=lambda body: chat_adapter_reply(body.get("messages", []))).start_in_thread()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PYLON_HOME"] = str(Path(tmp) / "home")
        # pylon_lm applies the money-safe daily budget (100,000 msat) whatever the config says:
        # the default prices keep both runs under it
        ledger = Path(tmp) / "dev-ledger.sqlite"
        fund(ledger, "customer", 100_000_000)
        backend = OpenAIBackend(args.backend or double.base_url)
        async with running_relay(Path(tmp) / "relay.sqlite") as relay, AsyncExitStack() as stack:
            providers = {}
            for name, price in (("cheap", args.cheap_msat), ("premium", args.premium_msat)):
                keys = Keys.generate()
                provider = Provider([relay.url], backend, keys=keys, models=[args.model], price_msat=price,
                                    wallet=DevWallet(ledger, name),
                                    db_path=Path(tmp) / f"{name}.sqlite")
                await stack.enter_async_context(provider.running())
                providers[name] = keys.public_key
            wallet = f"dev://{ledger}?account=customer"
            swarm = await asyncio.to_thread(run_compile, args, relay.url, wallet, providers["cheap"],
                                            providers["premium"])
            alone = await asyncio.to_thread(run_compile, args, relay.url, wallet, providers["premium"],
                                            providers["premium"])
        await backend.aclose()
    double.stop_thread()

    print(f"prices: cheap {args.cheap_msat} msat/job, premium {args.premium_msat} msat/job "
          f"({args.premium_msat / args.cheap_msat:.0f}x); {args.train} train examples, {args.demos} demos")
    for label, r in (("swarm + premium validation", swarm), ("premium only (measured)", alone)):
        print(f"{label:28} optimize {r.optimize.msat:>8} msat {r.optimize.tokens:>6} tok {r.optimize.calls:>3} calls"
              f" | validate {r.validate.msat:>8} msat {r.validate.tokens:>6} tok | total {r.total_msat:>8} msat")
    print(f"compiler's counterfactual premium-only: {swarm.premium_only_msat} msat "
          f"(measured: {alone.total_msat} msat, ratio {swarm.premium_only_msat / alone.total_msat:.3f})")
    print(f"optimize phase: swarm {swarm.optimize.msat} vs premium {alone.optimize.msat} msat -> "
          f"{1 - swarm.optimize.msat / alone.optimize.msat:.1%} cut")
    print(f"whole run:      swarm {swarm.total_msat} vs premium {alone.total_msat} msat -> "
          f"{1 - swarm.total_msat / alone.total_msat:.1%} cut (ratio {swarm.total_msat / alone.total_msat:.3f})")


if __name__ == "__main__":
    asyncio.run(main())
