"""Failover, the remaining gaps (issue 10, rule 5): targeted jobs fail over only when allowed
and never in clear; a failed provider is told it is avoided (AVOID_TAG) and does not run the
re-sent job; an error with nobody else live is reported at once, with no re-send.

Real Providers on OpenAI doubles and scripted providers, over the real embedded relay, with
real dev-wallet invoices where money is involved."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

import pytest

from pylon.customer.client import PaidNoResult, ProviderError
from pylon.customer.ledger import Ledger
from pylon.jobs.nip90 import AVOID_TAG, KIND_REQUEST
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import customer, serving, stored
from tests.payments.helpers import ScriptedProvider, paying_customer
from tests.peers.openai_double import OpenAIDouble

pytestmark = [pytest.mark.timeout(90), pytest.mark.embedded_relay]  # counts the relay's requests
FUNDS = 50_000


async def _errors(p: ScriptedProvider, req) -> None:
    await p.feedback(req, "processing")
    await p.feedback(req, "error", extra="GPU fell over")


async def _answers(p: ScriptedProvider, req) -> None:
    await p.feedback(req, "processing")
    await p.result(req, f"answer from {p.pubkey[:8]}")


async def _requests(relay_url: str) -> list:
    return await stored(relay_url, kinds=[KIND_REQUEST])


@contextlib.asynccontextmanager
async def watching(relay_url: str) -> AsyncIterator[list[Event]]:
    """Every job request published while inside, as a bystander on the relay sees it (the relay
    itself forgets a request once its customer cancels it)."""
    seen: list[Event] = []
    async with RelayPool([relay_url]) as pool:
        sub = pool.subscribe([Filter.of(kinds=[KIND_REQUEST], since=int(time.time()) - 1)])
        await sub.open()

        async def loop() -> None:
            while True:
                seen.append(await sub.next())
        task = asyncio.create_task(loop())
        try:
            yield seen
            await asyncio.sleep(0.3)  # what was published last has reached us
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await sub.close()


# ------------------------------------------------------------------------------ targeted jobs
async def test_targeted_job_does_not_fail_over_by_default(relay_url):
    """The user chose the provider (and the prompt is encrypted to it): its error is the answer,
    and nobody else ever gets the prompt."""
    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: _errors(a, req))
        b.serve(lambda req: _answers(b, req))
        await b.announce()
        async with watching(relay_url) as seen, customer(relay_url) as client:
            with pytest.raises(ProviderError, match="GPU fell over"):
                await client.ask("for a only", provider=a.pubkey, timeout=20)
    assert len(a.requests) == 1 and b.requests == []
    assert len(seen) == 1


async def test_targeted_job_allowed_to_fail_over_is_reencrypted_to_another_provider(relay_url):
    secret = "my private question"
    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: _errors(a, req))
        b.serve(lambda req: _answers(b, req))
        await b.announce()
        async with customer(relay_url) as client:
            outcome = await client.ask(secret, provider=a.pubkey, failover=True, timeout=30)
    assert outcome.provider == b.pubkey and outcome.text == f"answer from {b.pubkey[:8]}"
    (attempt,) = outcome.failover
    assert attempt["providers"] == [a.pubkey] and attempt["reason"] == "error" and attempt["resent_to"] == b.pubkey
    assert len(a.requests) == 1  # the re-send is encrypted to b: a cannot read it
    (req_b,) = b.requests
    assert req_b.encrypted and req_b.providers == [b.pubkey]
    events = await _requests(relay_url)
    # never in clear; the first request was cancelled (kind 5) when it failed, so the relay keeps the re-send only
    assert len(events) == 1 and all(secret not in e.to_json() for e in events)


async def test_targeted_job_sent_in_clear_fails_over_untargeted_avoiding_the_failed(relay_url):
    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: _errors(a, req) if not req.avoid else asyncio.sleep(0))
        b.serve(lambda req: _answers(b, req) if req.avoid else asyncio.sleep(0))
        await b.announce()
        async with customer(relay_url) as client:
            outcome = await client.ask("public question", provider=a.pubkey, encrypted=False, failover=True,
                                       timeout=30)
    assert outcome.provider == b.pubkey and outcome.failover[0]["resent_to"] == "any provider"
    resent = b.requests[-1]
    assert resent.providers == [] and not resent.encrypted and resent.avoid == [a.pubkey]


async def test_targeted_job_allowed_to_fail_over_with_nobody_else_reports_the_error(relay_url):
    async with ScriptedProvider(relay_url, None) as a:
        a.serve(lambda req: _errors(a, req))
        async with watching(relay_url) as seen, customer(relay_url) as client:
            with pytest.raises(ProviderError, match="GPU fell over"):
                await client.ask("anyone?", provider=a.pubkey, failover=True, timeout=20)
    assert len(seen) == 1


async def test_targeted_provider_that_never_replies_is_failed_over_when_allowed(relay_url):
    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: asyncio.sleep(0))  # reads it, says nothing
        b.serve(lambda req: _answers(b, req))
        await b.announce()
        async with customer(relay_url) as client:
            client.stall_s = 1.0
            outcome = await client.ask("hello?", provider=a.pubkey, failover=True, timeout=30)
    assert outcome.provider == b.pubkey and outcome.failover[0]["reason"] == "stalled"


async def test_paid_targeted_provider_that_fails_is_never_failed_over(relay_url, dev_ledger, tmp_path):
    """After a payment nothing is re-sent, even with failover allowed: never two payments."""
    dev_ledger.fund("customer", FUNDS)
    cw = dev_ledger.wallet("customer")

    async def take_and_fail(p: ScriptedProvider, req) -> None:
        inv = await p.wallet.make_invoice(1_000, f"job {req.id}", 600)
        await p.feedback(req, "payment-required", amount_msat=1_000, bolt11=inv.bolt11)
        for _ in range(200):
            if (await p.wallet.lookup_invoice(inv.payment_hash)).value == "settled":
                await p.feedback(req, "error", extra="GPU fell over after payment")
                return
            await asyncio.sleep(0.05)

    async with ScriptedProvider(relay_url, dev_ledger.wallet("a")) as a, \
            ScriptedProvider(relay_url, dev_ledger.wallet("b")) as b:
        a.serve(lambda req: take_and_fail(a, req))
        b.serve(lambda req: _answers(b, req))
        await b.announce()
        async with paying_customer(relay_url, cw, ledger_path=tmp_path / "receipts.sqlite") as client:
            with pytest.raises(PaidNoResult):
                await client.ask("pay then fail", provider=a.pubkey, failover=True, timeout=20)
    assert b.requests == [] and await cw.balance() == FUNDS - 1_000
    with Ledger(tmp_path / "receipts.sqlite") as ledger:
        assert [(r.provider, r.status) for r in ledger.receipts()] == [(a.pubkey, "paid")]


# ------------------------------------------------------------------------------ the avoid tag
async def test_failed_provider_does_not_rerun_the_resent_job(relay_url, tmp_path):
    """A real Provider whose backend answers 400 says `error`; the re-sent job names it in
    AVOID_TAG, so it skips the re-send: its backend is called once, not twice."""
    double = OpenAIDouble().start_in_thread()
    try:
        double.fail_next(1, status=400, message="bad request")
        async with serving(relay_url, double.base_url, tmp_path / "a.sqlite") as a, \
                ScriptedProvider(relay_url, None) as b:
            b.serve(lambda req: _answers(b, req) if req.avoid else asyncio.sleep(0))  # misses the first
            await b.announce()
            async with customer(relay_url) as client:
                outcome = await client.ask("hello", timeout=30, error_grace_s=0.2)
            ignored = a.stats.ignored
    finally:
        double.stop_thread()
    assert outcome.provider == b.pubkey and outcome.failover[0]["providers"] == [a.pubkey]
    assert len(double.requests) == 1  # without the tag the provider ran the re-send too
    assert ignored >= 1
    resent = b.requests[-1]
    assert resent.avoid == [a.pubkey]
    assert [AVOID_TAG, a.pubkey] in resent.event.tags  # public: other DVMs just ignore an unknown tag


async def test_avoid_option_uses_the_same_tag(relay_url, openai_double, tmp_path):
    """`--avoid NPUB` (avoid=): the avoided Pylon provider skips the job without running it."""
    async with serving(relay_url, openai_double.base_url, tmp_path / "a.sqlite") as a, \
            ScriptedProvider(relay_url, None) as b:
        b.serve(lambda req: _answers(b, req))
        async with customer(relay_url) as client:
            outcome = await client.ask("not you", avoid=[a.keys.npub], timeout=30)
    assert outcome.provider == b.pubkey and outcome.other_results == []
    assert openai_double.requests == [] and b.requests[0].avoid == [a.pubkey]


# ------------------------------------------------------------------------------ the fast error
async def test_error_with_nobody_else_live_is_reported_without_a_resend(relay_url, tmp_path):
    """The only live provider says `error` (backend HTTP 400): no grace, no re-send."""
    double = OpenAIDouble().start_in_thread()
    try:
        double.fail_next(1, status=400, message="bad request")
        async with serving(relay_url, double.base_url, tmp_path / "a.sqlite"):
            async with watching(relay_url) as seen, customer(relay_url) as client:
                t0 = time.monotonic()
                with pytest.raises(ProviderError, match="400|bad request"):
                    await client.ask("hello", timeout=30)  # default error_grace_s (3 s)
                print(f"only provider's error reported after {time.monotonic() - t0:.3f}s")
    finally:
        double.stop_thread()
    assert len(double.requests) == 1
    assert len(seen) == 1  # the job was not re-sent


async def test_error_with_another_live_provider_still_waits_and_resends(relay_url, tmp_path):
    """Another provider is live (announced) but silent: the job is re-sent to it; its silence
    then ends the ask with the original error."""
    double = OpenAIDouble().start_in_thread()
    try:
        double.fail_next(1, status=400, message="bad request")
        async with serving(relay_url, double.base_url, tmp_path / "a.sqlite"), \
                ScriptedProvider(relay_url, None) as b:
            b.serve(lambda req: asyncio.sleep(0))
            await b.announce()
            async with watching(relay_url) as seen, customer(relay_url) as client:
                with pytest.raises(ProviderError, match="400|bad request"):
                    await client.ask("hello", timeout=30, error_grace_s=0.2)
    finally:
        double.stop_thread()
    assert len(b.requests) == 2 and len(seen) == 2  # the first request and the re-send


def test_avoid_tag_round_trip():
    from pylon.jobs.nip90 import JobRequest, avoids

    keys, a, b = Keys.generate(), Keys.generate(), Keys.generate()
    event = JobRequest.from_prompt("x", avoid=[a.npub, a.public_key]).to_event(keys)
    assert [t for t in event.tags if t[0] == AVOID_TAG] == [[AVOID_TAG, a.public_key]]  # hex, once
    assert avoids(event, a.public_key) and not avoids(event, b.public_key)
    assert JobRequest.from_event(event).avoid == [a.public_key]


async def test_a_dvm_that_ignores_the_avoid_tag_is_still_never_taken(relay_url):
    """Other DVM software may not know the tag and answer anyway: the client still leaves it."""
    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: _answers(a, req))  # answers everything, avoid tag or not
        b.serve(lambda req: _answers(b, req))
        async with customer(relay_url) as client:
            outcome = await client.ask("not you", avoid=[a.pubkey], timeout=30, collect_s=0.3)
    assert outcome.provider == b.pubkey and a.requests[0].avoid == [a.pubkey]
    assert any(o["provider"] == a.pubkey and o["reason"] == "avoided (--avoid)" for o in outcome.offers)


async def test_cli_failover_flag_for_a_targeted_ask(relay_url, tmp_path):
    """`pylon ask --provider A --failover --json`: A errors, the answer comes from B, and the
    JSON says what happened; `--no-failover` (the default with --provider) reports A's error."""
    import json

    from tests.e2e.test_cli_jobs import _pylon

    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: _errors(a, req))
        b.serve(lambda req: _answers(b, req))
        await b.announce()
        code, out, err = await _pylon("ask", "hi", "--relay", relay_url, "--provider", a.keys.npub, "--failover",
                                      "--json", "--timeout", "30", home=tmp_path / "customer")
        no_code, _, no_err = await _pylon("ask", "hi", "--relay", relay_url, "--provider", a.keys.npub,
                                          "--timeout", "30", home=tmp_path / "customer")
    assert code == 0, err
    data = json.loads(out)
    assert data["provider"] == b.pubkey and data["paid_msat"] == 0
    assert data["failover"][0]["providers"] == [a.pubkey] and data["failover"][0]["resent_to"] == b.pubkey
    assert no_code != 0 and "GPU fell over" in no_err and "Traceback" not in no_err
    assert len(b.requests) == 1


@pytest.mark.vllm
@pytest.mark.timeout(300)
async def test_real_vllm_refusal_with_nobody_else_is_reported_at_once(relay_url, vllm_server, tmp_path):
    """The only provider's real backend (CPU vLLM) refuses the job (a model name it does not
    have: HTTP 404): the error is reported without the 3 s grace and the job is not re-sent."""
    async with serving(relay_url, vllm_server.base_url, tmp_path / "a.sqlite", models=["ghost-model"]):
        async with watching(relay_url) as seen, customer(relay_url) as client:
            t0 = time.monotonic()
            with pytest.raises(ProviderError, match="backend error"):
                await client.ask("hello", timeout=120)  # default error_grace_s (3 s)
            print(f"only provider's vLLM refusal reported after {time.monotonic() - t0:.3f}s")
    assert len(seen) == 1


async def test_untargeted_ask_asking_for_encryption_is_refused_not_sent_in_clear(relay_url):
    from pylon.jobs.nip90 import JobParseError

    async with watching(relay_url) as seen, customer(relay_url) as client:
        with pytest.raises(JobParseError, match="target exactly one provider"):
            await client.ask("secret", encrypted=True, timeout=10)
    assert seen == []
