"""Money under load through pylon_lm: a budget shared by threads and LM copies never
overspends (exact to the dev wallet), refusals are not retried (counted in jobs the provider
received), and an optimizer that runs out of budget stops with the billing error.
Real embedded relay, real Providers on the OpenAI DOUBLE, real dev wallet and receipts ledger."""

from __future__ import annotations

import asyncio

import dspy
import pytest

from dsrs_bridge.lm import history_msat, hub_of, pylon_lm
from pylon.nostr.keys import Keys

from test_lm import in_thread
from tests.e2e.helpers import wait_for


def paid_lm(swarm, dev_ledger, provider, **kw):
    kw.setdefault("cache", False)
    kw.setdefault("timeout", 20)
    return pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(),
                    wallet=dev_ledger.uri("customer"), provider=provider.keys.public_key, **kw)


async def receipts_total() -> int:
    from pylon.customer.ledger import Ledger

    with Ledger() as ledger:
        return sum(r.amount_msat + r.fee_msat for r in ledger.receipts() if r.status != "failed")


@pytest.mark.parametrize("threads", [8, 16])
async def test_evaluate_with_threads_never_overspends_the_budget(swarm, priced, dev_ledger, threads):
    provider = await priced(1_000)
    lm = paid_lm(swarm, dev_ledger, provider, max_msat_per_call=2_000, budget_msat=5_000)
    wallet = dev_ledger.wallet("customer")
    before = await wallet.balance()
    devset = [dspy.Example(question=f"budget question {i}", answer="x").with_inputs("question") for i in range(24)]
    metric = lambda example, pred, trace=None: pred.answer.startswith("answer-")  # noqa: E731
    result = await in_thread(lm, lambda: dspy.Evaluate(devset=devset, metric=metric, num_threads=threads,
                                                       display_progress=False, max_errors=100)(
        dspy.Predict("question -> answer")))
    spent = before - await wallet.balance()
    assert spent == 5_000  # the whole budget, not a msat more
    assert hub_of(lm).spent_msat == spent == history_msat(lm) == await receipts_total()
    # the relay hands a result to the customer before its OK to the provider, which counts it then
    await wait_for(lambda: provider.stats.done >= 5, timeout=10, what="the provider to count its results")
    assert provider.stats.done == 5 and result.score == pytest.approx(100 * 5 / 24, abs=0.01)


async def test_refusal_classes_are_not_retried(swarm, priced, dev_ledger):
    """Each refusal reaches the provider once (num_retries=3 would make it four)."""
    from dspy.utils.exceptions import LMBillingError, LMError

    provider = await priced(1_000)
    # a price above the bid: the provider says so, DSPy hears a billing error
    lm = paid_lm(swarm, dev_ledger, provider, max_msat_per_call=500, num_retries=3)
    with pytest.raises(LMBillingError, match="above"):
        await in_thread(lm, lambda: lm("too cheap a bid"))
    assert provider.stats.received == 1
    # the budget used up: no job at all
    lm = paid_lm(swarm, dev_ledger, provider, max_msat_per_call=1_000, budget_msat=1_000, num_retries=3)
    await in_thread(lm, lambda: lm("the one we can afford"))
    with pytest.raises(LMBillingError, match="used up") as used_up:
        await in_thread(lm, lambda: lm("one too many"))
    assert "budget_msat=" in str(used_up.value) and "daily" not in str(used_up.value)  # the LM's own budget's hint
    assert provider.stats.received == 2 and hub_of(lm).spent_msat == 1_000
    # a model nobody here serves (the free provider says so)
    lm = pylon_lm("no-such-model", relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=20,
                  provider=swarm.provider_pubkey, num_retries=3)
    received = swarm.provider.stats.received
    with pytest.raises(LMError, match="not served here") as info:
        await in_thread(lm, lambda: lm("hello?"))
    assert "Billing" not in type(info.value).__name__
    assert swarm.provider.stats.received == received + 1
    # the backend's 400 (a bad request) is not retried either
    swarm.double.fail_next(4, status=400, message="bad sampling parameters")
    lm = pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=20,
                  provider=swarm.provider_pubkey, num_retries=3)
    with pytest.raises(LMError, match="bad sampling parameters"):
        await in_thread(lm, lambda: lm("hello again"))
    assert swarm.provider.stats.received == received + 2


async def test_transient_backend_error_is_retried(swarm):
    from dsrs_bridge.errors import to_lm15_error
    from pylon.customer.client import ProviderError

    swarm.double.fail_next(1, status=503, message="warming up")
    lm = pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=20,
                  provider=swarm.provider_pubkey, num_retries=2)
    out = await in_thread(lm, lambda: lm("try twice"))
    assert out and swarm.provider.stats.received == 2  # the 503 was retried once, then answered
    assert type(to_lm15_error(ProviderError("x", {"p": "provider busy (9 jobs pending)"}))).__name__ == "RateLimitError"


async def test_optimizer_out_of_budget_stops_with_the_billing_error(swarm, priced, dev_ledger):
    from dspy.utils.exceptions import LMBillingError

    provider = await priced(1_000)
    lm = paid_lm(swarm, dev_ledger, provider, max_msat_per_call=1_000, budget_msat=2_000)
    trainset = [dspy.Example(question=f"train {i}", answer="x").with_inputs("question") for i in range(20)]
    opt = dspy.BootstrapFewShot(metric=lambda e, p, trace=None: True, max_bootstrapped_demos=20, max_rounds=1,
                                max_errors=3)
    with pytest.raises(LMBillingError, match="used up"):
        await in_thread(lm, lambda: opt.compile(dspy.Predict("question -> answer"), trainset=trainset))
    assert provider.stats.received == 2 and hub_of(lm).spent_msat == 2_000


async def test_wallet_from_pylon_wallet_or_a_uri(swarm, priced, dev_ledger, monkeypatch):
    provider = await priced(1_000)
    monkeypatch.setenv("PYLON_WALLET", dev_ledger.uri("customer"))
    lm = pylon_lm(swarm.model, relays=[swarm.relay_url], keys=Keys.generate(), cache=False, timeout=20,
                  provider=provider.keys.public_key)  # no wallet= : PYLON_WALLET
    await in_thread(lm, lambda: lm("paid from the environment"))
    monkeypatch.delenv("PYLON_WALLET")
    by_uri = paid_lm(swarm, dev_ledger, provider)  # wallet="dev://…?account=customer"
    await in_thread(by_uri, lambda: by_uri("paid by URI"))
    assert hub_of(lm).spent_msat == hub_of(by_uri).spent_msat == 1_000
    assert await dev_ledger.wallet("customer").balance() == 100_000 - 2_000
