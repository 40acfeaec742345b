"""pylon_lm lifecycle and identity: close() with calls in flight returns and releases every
waiting thread, the context manager closes, parallel rollouts are separate jobs, history
entries carry their cost and finish_reason. Real embedded relay, real Provider on the OpenAI
DOUBLE (and a priced provider with the dev wallet for the costs)."""

from __future__ import annotations

import asyncio
import threading

import dspy
import pytest

from dsrs_bridge.lm import close, history_msat, hub_of, pylon_lm
from pylon.nostr.keys import Keys

from test_lm import in_thread, stream_answer


def make_lm(swarm, **kw):
    kw.setdefault("cache", False)
    kw.setdefault("timeout", 60)
    return pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), **kw)


async def wait_for(predicate, limit_s: float = 20.0) -> None:
    for _ in range(int(limit_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_close_with_calls_in_flight_releases_every_thread(swarm):
    from pylon.customer.client import JobCancelled

    swarm.double.latency_s = 30  # every job stays in flight until it is cancelled
    lm = make_lm(swarm, num_retries=0)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            with dspy.context(lm=lm):
                lm(f"slow question {i}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertions
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    await wait_for(lambda: swarm.provider.in_flight == 6)
    closer = threading.Thread(target=close, args=(lm,), daemon=True)
    closer.start()
    await asyncio.to_thread(closer.join, 15)  # a bound against hanging, not a timing
    assert not closer.is_alive()
    for t in threads:
        await asyncio.to_thread(t.join, 15)
    assert not any(t.is_alive() for t in threads) and len(errors) == 6
    assert all("cancelled" in str(e).lower() or isinstance(e, JobCancelled) for e in errors)
    await wait_for(lambda: swarm.provider.stats.cancelled == 6)  # kind-5 cancellations reached it


async def test_context_manager_closes_and_the_lm_is_reusable_after_close(swarm):
    def run():
        with make_lm(swarm) as lm:
            out = lm("first")
        assert hub_of(lm)._thread is None  # closed on exit
        again = lm("after close: a fresh loop thread")
        close(lm)
        return out, again

    out, again = await asyncio.to_thread(run)
    assert out and again and len(swarm.double.requests) == 2


async def test_parallel_rollouts_are_separate_jobs_identical_calls_are_joined(swarm):
    swarm.double.latency_s = 0.3  # all four are in flight together
    lm = make_lm(swarm, temperature=1.0)
    with dspy.context(lm=lm):
        outs = await asyncio.gather(*(lm.acall("sample a story", rollout_id=i) for i in range(4)))
    assert len(outs) == 4 and hub_of(lm).jobs_started == 4 and hub_of(lm).jobs_joined == 0
    assert len(swarm.double.requests) == 4
    # copies made for rollouts (BestOfN, Refine) too
    copies = [lm.copy(rollout_id=10 + i) for i in range(3)]
    await asyncio.gather(*(c.acall("another story") for c in copies))
    assert hub_of(lm).jobs_started == 7
    # the same rollout asked twice at once is one job
    await asyncio.gather(*(lm.acall("the same", rollout_id=99) for _ in range(3)))
    assert hub_of(lm).jobs_started == 8 and hub_of(lm).jobs_joined == 2
    await lm.aclose()


async def test_finish_reason_length_when_truncated(swarm):
    lm = make_lm(swarm, max_tokens=2)
    swarm.double.reply = lambda body: "one two three four five six"
    out = await in_thread(lm, lambda: lm("a long answer please"))
    entry = lm.history[-1]
    assert entry["response"].finish_reason == "length"
    assert entry["response"].provider_data["pylon"]["finish_reason"] == "length"
    assert len(out[0].split()) == 2
    lm = make_lm(swarm, max_tokens=50)
    await in_thread(lm, lambda: lm("a short one"))
    assert lm.history[-1]["response"].finish_reason == "stop"


async def test_history_cost_usage_msat_and_copies(swarm, priced, dev_ledger):
    provider = await priced(1_000)
    lm = pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=20,
                  wallet=dev_ledger.uri("customer"), provider=provider.keys.public_key, max_msat_per_call=2_000)

    def run():
        with dspy.context(lm=lm, track_usage=True, adapter=dspy.ChatAdapter()):
            pred = dspy.Predict("question -> answer")(question="what does this cost?")
            copy = lm.copy(rollout_id=1, temperature=1.0)
            with dspy.context(lm=copy):
                dspy.Predict("question -> answer")(question="and a copy?")
        return pred, copy

    pred, copy = await in_thread(lm, run)
    entry = lm.history[-1]
    assert entry["cost"] == 1_000 and entry["cost_details"]["unit"] == "msat"
    assert entry["cost_details"]["jobs"] == [entry["response"].provider_data["pylon"]["job_id"]]
    usage = pred.get_lm_usage()[lm.model]
    assert usage["msat"] == 1_000 and usage["prompt_tokens"] > 0
    assert len(lm.history) == 1 and len(copy.history) == 1  # the copy's call is in the copy's history ...
    assert history_msat(lm) == history_msat(copy) == 2_000   # ... and counted for both
    assert hub_of(lm).spent_msat == 2_000
    import io

    shown = io.StringIO()
    lm.inspect_history(1, file=shown)
    assert "[pylon] these 1 call(s) paid 1000 msat; this LM and its copies: 2000 msat" in shown.getvalue()


async def test_stream_listener_sees_a_field_in_several_chunks(swarm):
    """The provider sends the first token at once and later ones every 50 ms: DSPy's field
    listener gets the answer piece by piece, and the pieces make the whole answer."""
    words = " ".join(f"word{i}" for i in range(12))
    swarm.double.reply = lambda body: f"[[ ## answer ## ]]\n{words}\n\n[[ ## completed ## ]]"
    swarm.double.token_delay_s = 0.08  # slower than the partial interval: each token its own partial
    lm = make_lm(swarm)
    chunks, final = await stream_answer(lm, "stream in pieces")
    assert final is not None and final.answer == words
    assert len(chunks) >= 4 and "".join(chunks).strip() == words
    await lm.aclose()


def test_deep_copies_share_the_hub_and_keep_their_own_history():
    import copy

    lm = pylon_lm("m", relays=["ws://127.0.0.1:9"], keys=Keys.generate())
    predict = dspy.Predict("q -> a")
    predict.lm = lm
    clone = copy.deepcopy(predict)  # what optimizers do to programs
    assert clone.lm is not lm and hub_of(clone.lm) is hub_of(lm) and clone.lm.history is not lm.history
