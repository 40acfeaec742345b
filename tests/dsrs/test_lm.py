"""pylon_lm end to end: real DSPy programs -> NIP-90 jobs on an embedded relay -> a real
Provider -> the shared OpenAI-compatible DOUBLE (scripted ChatAdapter / JSON replies).
The JSONAdapter run against the real CPU vLLM provider is in test_lm_vllm.py."""

from __future__ import annotations

import asyncio
import uuid

import dspy
import pytest

from dsrs_bridge.lm import aclose, close, history_msat, hub_of, pylon_lm
from dsrs_bridge.recorder import record
from pylon.nostr.keys import Keys


def make_lm(swarm, **kw):
    kw.setdefault("cache", False)
    kw.setdefault("timeout", 20)
    return pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), **kw)


async def in_thread(lm, fn, adapter=None):
    """Sync DSPy code runs in a worker thread so the test loop keeps serving relay + provider."""
    def go():
        with dspy.context(lm=lm, adapter=adapter or dspy.ChatAdapter()):
            return fn()
    try:
        return await asyncio.to_thread(go)
    finally:
        await asyncio.to_thread(close, lm)


async def stream_answer(lm, question: str):
    """Stream a `question -> answer` Predict through dspy.streamify with a listener on the
    answer field: (the answer's chunks, the final Prediction or None)."""
    prog = dspy.streamify(dspy.Predict("question -> answer"),
                          stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")])
    chunks, final = [], None
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        async for item in prog(question=question):
            if isinstance(item, dspy.streaming.StreamResponse):
                chunks.append(item.chunk)
            elif isinstance(item, dspy.Prediction):
                final = item
    return chunks, final


class TwoStep(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.refine = dspy.ChainOfThought("question, draft -> answer")

    def forward(self, question):
        d = self.draft(question=question)
        return self.refine(question=question, draft=d.draft)

    async def aforward(self, question):
        d = await self.draft.acall(question=question)
        return await self.refine.acall(question=question, draft=d.draft)


async def test_chat_adapter_program_over_the_swarm(swarm):
    lm = make_lm(swarm, temperature=0.25, max_tokens=77)
    prog = TwoStep()
    out = await in_thread(lm, lambda: prog(question="What is Nostr?"))
    assert out.answer.startswith("answer-") and out.reasoning.startswith("reasoning-")
    # system + user travel as chat messages; sampling params pass through to the backend
    assert len(swarm.double.requests) == 2
    for body in swarm.double.requests:
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["temperature"] == 0.25 and body["max_tokens"] == 77
    # usage and the job's identity are in the history
    for entry in lm.history:
        assert entry["usage"]["prompt_tokens"] > 0 and entry["usage"]["completion_tokens"] > 0
        data = entry["response"].provider_data["pylon"]
        assert len(data["job_id"]) == 64 and data["provider"] == swarm.provider_pubkey
        assert data["paid_msat"] == 0 and data["joined"] is False
    assert len({e["response"].provider_data["pylon"]["job_id"] for e in lm.history}) == 2


async def test_async_program_uses_the_loops_own_client(swarm):
    lm = make_lm(swarm)
    prog = TwoStep()
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        outs = await asyncio.gather(*(prog.acall(question=f"q{i}") for i in range(4)))
    assert all(o.answer.startswith("answer-") for o in outs)
    hub = hub_of(lm)
    assert hub.jobs_started == 8 and len(hub._clients) == 1
    await aclose(lm)


async def test_json_adapter_forwards_the_response_schema(swarm):
    lm = make_lm(swarm)
    sig = dspy.Signature("question -> answer: str, confidence: float")
    out = await in_thread(lm, lambda: dspy.Predict(sig)(question="2+2?"), adapter=dspy.JSONAdapter())
    assert isinstance(out.answer, str) and isinstance(out.confidence, float)
    fmt = swarm.double.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema"
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"answer", "confidence"}


@pytest.mark.embedded_relay
async def test_parallel_16_threads_one_connection_no_duplicate_jobs(swarm):
    lm = make_lm(swarm)
    prog = dspy.Predict("question -> answer")
    before = swarm.relay.stats.connections_total
    questions = [f"parallel question {i}" for i in range(32)]
    results = await in_thread(lm, lambda: dspy.Parallel(num_threads=16)([(prog, {"question": q}) for q in questions]))
    assert len(results) == 32 and all(r.answer.startswith("answer-") for r in results)
    hub = hub_of(lm)
    assert hub.jobs_started == 32 and hub.jobs_joined == 0
    assert len(swarm.double.requests) == 32  # every job ran exactly once at the backend
    job_ids = {e["response"].provider_data["pylon"]["job_id"] for e in lm.history}
    assert len(job_ids) == 32
    assert swarm.relay.stats.connections_total - before == 1  # all 16 threads shared one connection


async def test_evaluate_runs_every_example_as_a_job(swarm):
    """dspy.Evaluate (threads) over the swarm: each devset example is one job, one connection."""
    lm = make_lm(swarm)
    devset = [dspy.Example(question=f"evaluate question {i}", answer="x").with_inputs("question") for i in range(6)]
    metric = lambda example, pred, trace=None: pred.answer.startswith("answer-")  # noqa: E731
    before = swarm.relay.stats.connections_total
    result = await in_thread(lm, lambda: dspy.Evaluate(devset=devset, metric=metric, num_threads=3,
                                                       display_progress=False)(dspy.Predict("question -> answer")))
    assert result.score == 100.0
    assert hub_of(lm).jobs_started == 6 and len(swarm.double.requests) == 6
    assert swarm.relay.stats.connections_total - before == 1


async def test_identical_in_flight_requests_are_joined(swarm):
    swarm.double.latency_s = 0.3  # keeps the first job in flight while the others arrive
    lm = make_lm(swarm)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        p = dspy.Predict("question -> answer")
        outs = await asyncio.gather(*(p.acall(question="same question") for _ in range(6)))
    assert len({o.answer for o in outs}) == 1
    hub = hub_of(lm)
    assert hub.jobs_started == 1 and hub.jobs_joined == 5
    assert len(swarm.double.requests) == 1
    joined = [e["response"].provider_data["pylon"]["joined"] for e in lm.history]
    assert sorted(joined) == [False] + [True] * 5
    await aclose(lm)


async def test_n_makes_separate_jobs(swarm):
    lm = make_lm(swarm)
    outs = await in_thread(lm, lambda: lm("say something", n=3))
    assert len(outs) == 3
    assert hub_of(lm).jobs_started == 3 and len(swarm.double.requests) == 3


async def test_cached_answers_cost_nothing_and_make_no_job(swarm):
    lm = make_lm(swarm, cache=True)
    question = f"cache me {uuid.uuid4().hex}"
    p = dspy.Predict("question -> answer")
    first = await in_thread(lm, lambda: p(question=question))
    second = await in_thread(lm, lambda: p(question=question))
    assert first.answer == second.answer
    assert len(swarm.double.requests) == 1 and hub_of(lm).jobs_started == 1
    assert lm.history[-1]["usage"] == {}  # DSPy's cache hit
    assert history_msat(lm) == 0


async def test_no_provider_times_out_and_is_retried(tmp_path):
    from dspy.utils.exceptions import LMTimeoutError
    from nexus_relay import running_relay

    async with running_relay(tmp_path / "empty.sqlite") as relay:
        lm = pylon_lm("nobody-serves-this", relays=[relay.url], keys=Keys.generate(), cache=False,
                      timeout=0.5, num_retries=1)
        with pytest.raises(LMTimeoutError):
            await in_thread(lm, lambda: lm("hello?"))
        assert hub_of(lm).jobs_started == 2  # the first attempt and one retry


async def test_refusal_to_pay_is_not_retried(swarm, tmp_path, dev_ledger):
    from dspy.utils.exceptions import LMBillingError
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.provider.provider import Provider

    backend = OpenAIBackend(swarm.double.base_url)
    priced = Provider([swarm.relay_url], backend, keys=Keys.generate(), models=["priced-model"], free=False,
                      price_msat=5_000, wallet=dev_ledger.wallet("provider"), db_path=tmp_path / "priced.sqlite")
    async with priced.running():
        lm = pylon_lm("priced-model", relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=10,
                      provider=priced.keys.public_key, num_retries=3)  # no wallet: the quote is refused
        with pytest.raises(LMBillingError, match="payment refused"):
            await in_thread(lm, lambda: lm("what does this cost?"))
        assert hub_of(lm).jobs_started == 1
    await backend.aclose()
    assert not swarm.double.requests  # nothing ran unpaid


async def test_paid_program_receipts_match_the_history(swarm, tmp_path, dev_ledger):
    """A DSPy program against a priced provider: every LM call is paid once, and the receipts
    in the client's ledger add up to the msats lm.history reports."""
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.customer.ledger import Ledger
    from pylon.provider.provider import Provider

    dev_ledger.fund("customer", 100_000)
    backend = OpenAIBackend(swarm.double.base_url)
    priced = Provider([swarm.relay_url], backend, keys=Keys.generate(), models=[swarm.model], free=False,
                      price_msat=1_000, price_per_1k_tokens_msat=500, wallet=dev_ledger.wallet("provider"),
                      db_path=tmp_path / "priced.sqlite")
    async with priced.running():
        lm = pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=20,
                      provider=priced.keys.public_key, wallet=dev_ledger.wallet("customer"),
                      max_msat_per_call=5_000, budget_msat=50_000, max_tokens=100)
        out = await in_thread(lm, lambda: TwoStep()(question="what does this cost?"))
        price = 1_000 + 50  # 100 max_tokens at 500 msat per 1k
        ledger = hub_of(lm).budget.ledger
        assert ledger._writer is None  # in_thread closed the LM: its budget ledger's writer thread ended too
        assert hub_of(lm).spent_msat == 2 * price
        again = await in_thread(lm, lambda: dspy.Predict("question -> answer")(question="and once more?"))
        assert again.answer.startswith("answer-") and hub_of(lm).spent_msat == 3 * price  # the same session
    await backend.aclose()
    assert out.answer.startswith("answer-")
    assert len(lm.history) == 3 and history_msat(lm) == 3 * price
    with Ledger() as ledger:
        receipts = ledger.receipts()
    assert sorted(r.job_id for r in receipts) == sorted(
        e["response"].provider_data["pylon"]["job_id"] for e in lm.history)
    assert all(r.status == "paid" for r in receipts) and sum(r.amount_msat + r.fee_msat for r in receipts) == 3 * price
    assert await dev_ledger.wallet("customer").balance() == 100_000 - 3 * price
    assert hub_of(lm).spent_msat == 3 * price


async def test_streamify_yields_tokens_from_partial_feedback(swarm):
    swarm.double.token_delay_s = 0.1  # several `partial` feedback events before the result
    lm = make_lm(swarm)
    chunks, final = await stream_answer(lm, "stream please")
    assert final is not None and final.answer.startswith("answer-")
    assert chunks and "".join(chunks).strip() == final.answer
    await aclose(lm)


async def test_recorder_links_lm_calls_to_their_jobs(swarm):
    lm = make_lm(swarm)
    prog = TwoStep()

    def run():
        with record(prog) as g:
            prog(question="traced")
        return g

    g = await in_thread(lm, run)
    lm_nodes = g.by_role("lm")
    assert len(lm_nodes) == 2
    assert {n.jobs[0].event_id for n in lm_nodes} == {
        e["response"].provider_data["pylon"]["job_id"] for e in lm.history}
    assert all(n.jobs[0].provider == swarm.provider_pubkey and n.paid_msat == 0 for n in lm_nodes)


class RefusingClientDouble:
    """A PylonClient DOUBLE whose every ask meets a refusal to pay (what PylonClient raises
    when a quote exceeds the bid or budget, or there is no wallet), with no relay at all; the
    real-provider version is test_refusal_to_pay_is_not_retried above."""

    def __init__(self):
        self.asks = 0

    async def start(self):
        pass

    async def close(self):
        pass

    async def ask(self, messages, **params):
        from pylon.customer.client import PaymentRefused

        self.asks += 1
        raise PaymentRefused("above_bid", f"quote of 5000 msat exceeds the bid of {params.get('bid_msat')} msat")


def test_refusal_to_pay_maps_to_billing_error_and_is_not_retried_double():
    from dspy.utils.exceptions import LMBillingError
    from dsrs_bridge.lm import SwarmHub

    double = RefusingClientDouble()
    lm = pylon_lm("m", relays=["ws://127.0.0.1:9"], keys=Keys.generate(), cache=False, num_retries=3,
                  max_msat_per_call=1_000)
    hub = hub_of(lm)
    assert isinstance(hub, SwarmHub)
    hub._factory = lambda: double
    try:
        with pytest.raises(LMBillingError, match="payment refused"):
            lm("hello")
    finally:
        close(lm)
    assert double.asks == 1


def test_budget_arguments_are_checked_and_bids_come_from_the_shared_budget(dev_ledger):
    from dsrs_bridge.lm import SwarmHub

    with pytest.raises(ValueError, match="budget_msat"):
        SwarmHub(["ws://x"], budget_msat=-1)
    assert SwarmHub(["ws://x"]).budget is None  # no wallet: nothing is paid, no budget to share
    hub = SwarmHub(["ws://x"], wallet=dev_ledger.uri("customer"), max_msat_per_call=1_000, budget_msat=2_500)
    assert hub.budget.per_job_msat == 1_000 and hub.budget.session_msat == 2_500
    assert hub.bid_msat() == 1_000 and hub.spent_msat == 0
