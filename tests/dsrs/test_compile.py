"""SwarmCompiler: optimize on a cheap provider, validate on a premium one (both real
Providers on the OpenAI DOUBLE over the embedded relay, paid from the dev wallet); the cost
report adds up to the receipts of each provider."""

from __future__ import annotations

import asyncio

import dspy
import pytest

import dsrs_bridge
from dsrs_bridge.lm import close

from test_lm_money import paid_lm

TRAIN = [("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4"),
         ("Which planet is red?", "Mars")]


def any_answer(example, prediction, trace=None) -> bool:
    return bool(str(getattr(prediction, "answer", "")).strip())


def receipts_by_provider() -> dict[str, int]:
    from pylon.customer.ledger import Ledger

    out: dict[str, int] = {}
    with Ledger() as ledger:
        for r in ledger.receipts():
            if r.status == "paid":
                out[r.provider] = out.get(r.provider, 0) + r.amount_msat + r.fee_msat
    return out


async def run_compile(swarm, priced, dev_ledger, budget_msat):
    cheap, premium = await priced(100), await priced(1_000)
    swarm_lm = paid_lm(swarm, dev_ledger, cheap, max_msat_per_call=100)
    premium_lm = paid_lm(swarm, dev_ledger, premium, max_msat_per_call=1_000)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in TRAIN]
    optimizer = dspy.BootstrapFewShot(metric=any_answer, max_bootstrapped_demos=1, max_labeled_demos=1,
                                      max_rounds=1)

    def go():
        with dspy.context(adapter=dspy.ChatAdapter()):
            return dsrs_bridge.compile(dspy.Predict("question -> answer"), trainset, any_answer,
                                       swarm_lm=swarm_lm, premium_lm=premium_lm, budget_msat=budget_msat,
                                       optimizer=optimizer)

    try:
        compiled, report = await asyncio.to_thread(go)
    finally:
        await asyncio.to_thread(close, swarm_lm)
        await asyncio.to_thread(close, premium_lm)
    return compiled, report, cheap, premium


async def test_cost_report_adds_up_to_the_receipts(swarm, priced, dev_ledger):
    compiled, report, cheap, premium = await run_compile(swarm, priced, dev_ledger, budget_msat=50_000)
    paid = receipts_by_provider()
    assert report.optimize.msat == paid[cheap.keys.public_key] == 100 * report.optimize.calls > 0
    assert report.validate.msat == paid[premium.keys.public_key] == 1_000 * report.validate.calls
    assert report.validate.calls == 2 * len(TRAIN)  # two candidates, each over the valset
    assert [c["index"] for c in report.candidates] == [0, 1] and not report.stopped_at_budget
    assert report.chosen == 0 and len(compiled.demos) == 0  # a tie on the premium metric: the earlier one
    assert report.optimize.tokens > 0 and report.validate.tokens > 0
    # the counterfactual: the optimize phase's tokens at the premium price measured in validation
    rate = report.validate.msat * 1000 / report.validate.tokens
    assert report.premium_only_msat == round(report.optimize.tokens * rate / 1000) + report.validate.msat
    assert report.premium_only_msat > report.total_msat and 0 < report.saving < 1
    assert report.to_dict()["total_msat"] == sum(paid.values())


async def test_stops_at_the_budget(swarm, priced, dev_ledger):
    # room for the optimize phase and one validation, not two
    compiled, report, _, _ = await run_compile(swarm, priced, dev_ledger, budget_msat=4_000)
    assert report.stopped_at_budget and [c["index"] for c in report.candidates] == [0]
    assert report.total_msat <= 4_000


def test_a_foreign_premium_lm_needs_a_price():
    lm = dspy.LM("openai/x", api_base="http://127.0.0.1:9", api_key="k")
    with pytest.raises(ValueError, match="premium_msat_per_1k_tokens"):
        dsrs_bridge.compile(dspy.Predict("q -> a"), [], any_answer, swarm_lm=lm, premium_lm=lm, budget_msat=1)


async def test_premium_on_an_openai_compatible_url(swarm, priced, dev_ledger):
    cheap = await priced(100)
    swarm_lm = paid_lm(swarm, dev_ledger, cheap, max_msat_per_call=100)
    premium_lm = dspy.LM("openai/double-model", api_base=swarm.double.base_url, api_key="k", cache=False)
    trainset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in TRAIN]
    optimizer = dspy.BootstrapFewShot(metric=any_answer, max_bootstrapped_demos=1, max_labeled_demos=1,
                                      max_rounds=1)

    def go():
        with dspy.context(adapter=dspy.ChatAdapter()):
            return dsrs_bridge.compile(dspy.Predict("question -> answer"), trainset, any_answer, swarm_lm=swarm_lm,
                                       premium_lm=premium_lm, budget_msat=50_000, optimizer=optimizer,
                                       premium_msat_per_1k_tokens=3_000)

    try:
        _, report = await asyncio.to_thread(go)
    finally:
        await asyncio.to_thread(close, swarm_lm)
    assert report.optimize.msat == receipts_by_provider()[cheap.keys.public_key] == 100 * report.optimize.calls
    assert report.validate.calls == 6 and report.validate.tokens > 0
    assert report.validate.msat == sum(round(c["msat"]) for c in report.candidates)
    assert abs(report.validate.msat - report.validate.tokens * 3) <= 2  # priced per token, rounded per candidate
    assert report.premium_only_msat == round(report.optimize.tokens * 3) + report.validate.msat
