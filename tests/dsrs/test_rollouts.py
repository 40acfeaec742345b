"""Refine and BestOfN with pylon_lm: each rollout its own paid job and receipt, recorded in
the DAG, and spread across providers on request. Real embedded relay, real Providers on
the OpenAI DOUBLE, real dev wallet and receipts ledger."""

from __future__ import annotations

import asyncio

import dspy

from dsrs_bridge.lm import close, hub_of, pylon_lm
from dsrs_bridge.recorder import record
from dsrs_bridge.rollouts import provider_for, spread_lm
from pylon.nostr.keys import Keys

from test_lm_money import paid_lm


def paid_receipts() -> list:
    from pylon.customer.ledger import Ledger

    with Ledger() as ledger:
        return [r for r in ledger.receipts() if r.status == "paid"]


def never_good(args, pred) -> float:
    return 0.0  # every attempt runs


async def test_refine_n3_makes_three_paid_jobs_and_three_receipts(swarm, priced, dev_ledger):
    provider = await priced(1_000)
    lm = paid_lm(swarm, dev_ledger, provider, max_msat_per_call=1_000, budget_msat=10_000)
    # Refine asks the settings LM for advice between attempts: a free provider answers those
    advisor = pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(),
                       provider=swarm.provider_pubkey, cache=False, timeout=20)
    qa = dspy.Predict("question -> answer")
    qa.set_lm(lm)
    refine = dspy.Refine(qa, N=3, reward_fn=never_good, threshold=1.0)

    def go():
        with dspy.context(lm=advisor, adapter=dspy.ChatAdapter()):
            with record(refine, name="refine") as graph:
                refine(question="What is a relay?")
        return graph

    try:
        graph = await asyncio.to_thread(go)
    finally:
        await asyncio.to_thread(close, lm)
        await asyncio.to_thread(close, advisor)
    receipts = paid_receipts()
    assert len(receipts) == 3 and {r.provider for r in receipts} == {provider.keys.public_key}
    assert len({r.job_id for r in receipts}) == 3  # three jobs, none joined or cached
    assert hub_of(lm).spent_msat == 3_000 and await dev_ledger.wallet("customer").balance() == 100_000 - 3_000
    paid_nodes = [n for n in graph.nodes if n.role == "lm" and n.paid_msat]
    assert sorted(j.event_id for n in paid_nodes for j in n.jobs) == sorted(r.job_id for r in receipts)


async def test_best_of_n_spreads_rollouts_across_providers(swarm, priced, dev_ledger):
    cheap, dear = await priced(1_000), await priced(2_000)
    lm = spread_lm(swarm.model, providers=[cheap.keys.npub, dear.keys.public_key], relays=[swarm.relay_url],
                   keys=Keys.generate(), wallet=dev_ledger.uri("customer"), max_msat_per_call=2_000,
                   budget_msat=20_000, cache=False, timeout=20)
    best = dspy.BestOfN(dspy.Predict("question -> answer"), N=4, reward_fn=never_good, threshold=1.0)

    def go():
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            return best(question="What is a zap?")

    try:
        out = await asyncio.to_thread(go)
    finally:
        await asyncio.to_thread(close, lm)
    assert out.answer.startswith("answer-")
    receipts = paid_receipts()
    by_provider = sorted(r.provider for r in receipts)
    assert by_provider == sorted([cheap.keys.public_key] * 2 + [dear.keys.public_key] * 2)
    assert hub_of(lm).spent_msat == 6_000 == sum(r.amount_msat for r in receipts)


def test_provider_for_rollout_ids():
    ps = ["a", "b", "c"]
    assert [provider_for(i, ps) for i in range(4)] == ["a", "b", "c", "a"]
    assert provider_for(None, ps) is None
    assert provider_for("x", ps) == provider_for("x", ps) in ps
