"""Whole jobs through the embedded relay with the OpenAI server DOUBLE as backend.

The double stands in next to (not instead of) vLLM: the same journeys run against the real
vLLM server in test_jobs_vllm.py. The double makes timings and failures scriptable
(latency, hangs, errors, slow streams) and exposes the backend's own in-flight counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from pylon.customer.client import JobCancelled, NoProviderAnswered, PaymentRefused, ProviderError
from pylon.provider.jobstore import JobStore
from pylon.jobs.nip90 import JobFeedback, JobRequest
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import customer, serving, stored, wait_for, wait_stored
from tests.peers.openai_double import count_tokens

pytestmark = pytest.mark.timeout(120)


async def test_ask_round_trip(relay_url, openai_double, tmp_path):
    openai_double.latency_s = 0.4  # longer than PROCESSING_NOTICE_S: the provider says `processing`
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            stages = []
            outcome = await client.ask("hello there", max_tokens=50, temperature=0.3, top_p=0.9, top_k=5,
                                       frequency_penalty=0.5, seed=3, timeout=30,
                                       on_progress=lambda p: stages.append(p.stage))
    expected = "This is the OpenAI double answering the prompt: hello there"
    assert outcome.text == expected
    assert outcome.provider == provider.pubkey and outcome.model == openai_double.model
    assert outcome.usage.prompt_tokens == 2 and outcome.usage.completion_tokens == count_tokens(expected)
    assert stages[0] == "published" and stages[-1] == "done" and "processing" in stages
    sent = openai_double.requests[0]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["top_k"], sent["frequency_penalty"],
            sent["seed"]) == (50, 0.3, 0.9, 5, 0.5, 3)
    assert provider.stats.done == 1 and outcome.paid_msat == 0


async def test_stream_yields_partials_in_order(relay_url, openai_double, tmp_path):
    words = [f"w{i} " for i in range(40)]
    openai_double.reply = lambda req: "".join(words)
    openai_double.token_delay_s = 0.02  # ~0.8 s of streaming: several 50 ms partials
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", partial_interval_s=0.05):
        async with customer(relay_url) as client:
            stream = client.stream("count", timeout=30)
            pieces = [piece async for piece in stream]
    assert "".join(pieces) == "".join(words) == stream.outcome.text
    assert len(pieces) > 2  # arrived in several pieces, before the result


async def test_partials_are_sent_only_to_a_customer_who_streams(relay_url, openai_double, tmp_path):
    """A partial is a signed event through the relay: ask() does not read them, so none are
    sent for it (the request carries no stream param); stream() asks for them."""
    openai_double.reply = lambda req: "".join(f"w{i} " for i in range(20))
    openai_double.token_delay_s = 0.01
    openai_double.latency_s = 0.3  # past PROCESSING_NOTICE_S: the job that is not streamed says `processing`
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", partial_interval_s=0.0):
        async with customer(relay_url) as client:
            asked = await client.ask("not streamed", timeout=30)
            stream = client.stream("streamed", timeout=30)
            pieces = [piece async for piece in stream]
        async with RelayPool([relay_url]) as pool:
            feedback = await pool.query([Filter.parse({"kinds": [7000], "#e": [asked.job_id, stream.outcome.job_id]})],
                                        timeout=5)
    statuses = {(ev.first_tag("e")[1], ev.first_tag("status")[1]) for ev in feedback}
    assert (asked.job_id, "partial") not in statuses and (asked.job_id, "processing") in statuses
    assert (stream.outcome.job_id, "partial") in statuses and len(pieces) > 1


async def test_a_quick_job_says_no_processing_and_a_failing_one_says_it_before_its_error(relay_url,
                                                                                         openai_double,
                                                                                         tmp_path):
    """`processing` goes out PROCESSING_NOTICE_S after the claim, only if the job still runs:
    a quick job's replies are just its result. A job that fails after its claim says
    `processing` before its `error`, so the customer can tell a provider that was at work on
    it (failover) from one that declined."""
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            quick = await client.ask("quick", timeout=30)
            openai_double.fail_next()
            with pytest.raises(ProviderError):
                await client.ask("failing", timeout=30, provider=provider.pubkey)
            failed = openai_double.requests[-1]
        async with RelayPool([relay_url]) as pool:
            replies = await pool.query([Filter.parse({"kinds": [6050, 7000], "authors": [provider.pubkey]})], timeout=5)
    assert failed["messages"][0]["content"] == "failing"
    by_job: dict[str, list[str]] = {}
    for ev in sorted(replies, key=lambda e: (e.created_at, e.kind)):
        by_job.setdefault(ev.first_tag("e")[1], []).append(ev.first_tag("status")[1] if ev.kind == 7000 else "result")
    assert by_job.pop(quick.job_id) == ["result"]
    (statuses,) = by_job.values()
    assert sorted(statuses) == ["error", "processing"]


async def test_chat_messages_reach_the_backend_unflattened(relay_url, openai_double, tmp_path):
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}]
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite"):
        async with customer(relay_url) as client:
            outcome = await client.ask(messages, timeout=30)
    assert openai_double.requests[0]["messages"] == messages
    assert outcome.text.endswith("Again")


async def test_response_format_is_passed_through(relay_url, openai_double, tmp_path):
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite"):
        async with customer(relay_url) as client:
            outcome = await client.ask("json please", response_format=fmt, timeout=30)
    assert openai_double.requests[0]["response_format"] == fmt
    assert json.loads(outcome.text) == {"answer": "double"}


async def test_model_not_served_names_the_served_models(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            with pytest.raises(ProviderError) as info:
                await client.ask("x", model="gpt-17", provider=provider.keys.npub, timeout=30)
            # untargeted: the client waits for others, then reports the error (grace period)
            with pytest.raises(ProviderError, match="double-model"):
                await client.ask("x", model="gpt-17", timeout=30, error_grace_s=0.2)
    assert "'gpt-17' is not served here" in str(info.value) and "double-model" in str(info.value)
    assert openai_double.requests == []


async def test_max_tokens_is_capped_by_the_provider(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", max_tokens_cap=3):
        async with customer(relay_url) as client:
            capped = await client.ask("hello", max_tokens=1000, timeout=30)
            default = await client.ask("hello", timeout=30)
    assert [r["max_tokens"] for r in openai_double.requests] == [3, 3]
    assert capped.usage.completion_tokens == 3 and capped.text == "This is the "
    assert default.usage.completion_tokens == 3


async def test_32_jobs_run_concurrently(relay_url, openai_double, tmp_path):
    openai_double.latency_s = 0.2
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", concurrency=32) as provider:
        async with customer(relay_url) as client:
            outcomes = await asyncio.gather(*(client.ask(f"job {i}", timeout=60) for i in range(32)))
    assert sorted(o.text.rsplit(" ", 1)[1] for o in outcomes) == sorted(str(i) for i in range(32))
    assert len({o.job_id for o in outcomes}) == 32
    assert openai_double.max_in_flight > 1            # the backend saw overlapping requests
    assert provider.stats.max_backend_in_flight > 1
    assert provider.stats.generations == 32


async def test_concurrency_limit_is_respected(relay_url, openai_double, tmp_path):
    openai_double.latency_s = 0.05
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", concurrency=2) as provider:
        async with customer(relay_url) as client:
            await asyncio.gather(*(client.ask(f"job {i}", timeout=60) for i in range(8)))
    assert openai_double.max_in_flight <= 2 and provider.stats.max_backend_in_flight <= 2


async def test_backend_error_becomes_error_feedback_and_provider_survives(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            openai_double.fail_next(1, status=500, message="GPU on fire")
            with pytest.raises(ProviderError, match="GPU on fire"):
                await client.ask("x", provider=provider.pubkey, timeout=30)
            openai_double.drop_next(1)
            with pytest.raises(ProviderError, match="backend"):
                await client.ask("x", provider=provider.pubkey, timeout=30)
            outcome = await client.ask("still there?", timeout=30)  # the provider kept running
    assert outcome.text.endswith("still there?")
    assert provider.stats.errors == 2 and provider.stats.done == 1


async def test_backend_down_is_reported_and_tracked(relay_url, tmp_path):
    from tests.peers.openai_double import OpenAIDouble

    double = OpenAIDouble().start_in_thread()
    url = double.base_url
    async with serving(relay_url, url, tmp_path / "p.sqlite", health_interval_s=3600) as provider:
        assert provider.backend_health.ok and provider.served_models == ["double-model"]
        double.stop_thread()  # the backend dies
        async with customer(relay_url) as client:
            with pytest.raises(ProviderError, match="unavailable"):
                await client.ask("x", provider=provider.pubkey, timeout=30)
        await wait_for(lambda: provider.backend_health is not None and not provider.backend_health.ok,
                       what="health check to notice the dead backend")
        assert provider.in_flight == 0


@contextlib.asynccontextmanager
async def _backend_down_then_back(relay_url, tmp_path):
    """A provider (periodic probe: hourly) whose backend dies, is seen dead, and comes back on
    the same port; yields the provider right after the backend is back."""
    from urllib.parse import urlsplit

    from tests.peers.openai_double import OpenAIDouble

    double = OpenAIDouble().start_in_thread()
    port = urlsplit(double.base_url).port
    try:
        async with serving(relay_url, double.base_url, tmp_path / "p.sqlite", health_interval_s=3600) as provider:
            double.stop_thread()
            provider._check_health_now.set()
            await wait_for(lambda: provider.backend_health is not None and not provider.backend_health.ok,
                           what="health check to notice the dead backend")
            double = OpenAIDouble(port=port).start_in_thread()
            yield provider
    finally:
        double.stop_thread()


async def test_a_job_arriving_after_the_backend_came_back_is_served_not_refused(relay_url, tmp_path,
                                                                                monkeypatch):
    """The last probe said "down": a job that arrives gets a fresh probe first, so it is served
    rather than refused until the next periodic probe (no retry probes here: an hour apart)."""
    import pylon.provider.provider as provider_module

    monkeypatch.setattr(provider_module, "UNHEALTHY_PROBE_S", 3600.0)
    async with _backend_down_then_back(relay_url, tmp_path) as provider:
        request = JobRequest.from_prompt("are you back?", providers=[provider.pubkey]).to_event(Keys.generate())
        async with RelayPool([relay_url]) as pool:
            await pool.publish(request)
        await wait_for(lambda: provider.store.status(request.id) in ("done", "error"), what="the job to finish")
        assert provider.store.status(request.id) == "done" and provider.stats.rejected == 0


async def test_a_backend_that_came_back_is_announced_again_within_seconds(relay_url, tmp_path):
    """While the backend is down it is probed every UNHEALTHY_PROBE_S (2 s), not every
    `health_interval_s`: customers see the provider live again within seconds."""
    async with _backend_down_then_back(relay_url, tmp_path) as provider:
        await wait_for(lambda: provider.announcing, timeout=10, what="the provider to announce again")
        async with customer(relay_url) as client:
            outcome = await client.ask("are you back?", provider=provider.pubkey, timeout=30)
        assert outcome.text.endswith("are you back?")


async def test_cancellation_stops_a_running_job(relay_url, openai_double, tmp_path):
    openai_double.hang_next(1)
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            task = asyncio.create_task(client.ask("never answered", timeout=60))
            await wait_for(lambda: provider.stats.backend_in_flight == 1, what="the job to reach the backend")
            task.cancel()
            with pytest.raises(JobCancelled, match="kind 5"):
                await task
            await wait_for(lambda: provider.stats.cancelled == 1, what="the provider to cancel the job")
        assert provider.stats.backend_in_flight == 0 and provider.in_flight == 0
        statuses = provider.store.counts()
    assert statuses == {"cancelled": 1}


async def test_timeout_with_no_provider_cancels_the_job(relay_url):
    async with customer(relay_url) as client:
        with pytest.raises(NoProviderAnswered, match="cancelled"):
            await client.ask("anyone?", timeout=0.5)
        deletions = await stored(relay_url, kinds=[5], authors=[client.pubkey])
    assert len(deletions) == 1 and ["k", "5050"] in deletions[0].tags


async def test_requests_for_another_provider_are_ignored(relay_url, openai_double, tmp_path):
    someone_else = Keys.generate()
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            with pytest.raises(NoProviderAnswered):
                await client.ask("for someone else", provider=someone_else.public_key, timeout=1.0)
            await client.ask("for anyone", timeout=30)  # processed after the ignored one
    assert provider.stats.ignored == 1 and len(openai_double.requests) == 1


async def test_encrypted_job_is_unreadable_to_a_third_party(relay_url, openai_double, tmp_path):
    secret = "the secret prompt"
    openai_double.latency_s = 0.4  # the provider says `processing` too: its feedback is sealed as well
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with RelayPool([relay_url], keys=Keys.generate()) as spy:
            async with spy.subscribe([_all_jobs()]) as seen:
                async with customer(relay_url) as client:
                    outcome = await client.ask(secret, provider=provider.keys.npub, timeout=30)
                    assert outcome.encrypted
                    await wait_for(lambda: seen.pending_events() >= 3, what="the spy to see the job's events")
                events = []
                while seen.pending_events():
                    events.append(await seen.next(1))
    assert outcome.text.endswith(secret)  # the customer reads the answer
    assert {e.kind for e in events} >= {5050, 6050}
    for event in events:
        wire = event.to_json()
        assert "secret prompt" not in wire and "OpenAI double" not in wire
        assert ["encrypted"] in event.tags


def _all_jobs():
    from pylon.nostr.filters import Filter

    return Filter.of(kinds=[5050, 6050, 7000])


async def test_two_providers_race_client_takes_one_records_the_other(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "a.sqlite") as a, \
            serving(relay_url, openai_double.base_url, tmp_path / "b.sqlite") as b:
        async with customer(relay_url) as client:
            outcome = await client.ask("race", timeout=30, collect_s=30, collect_max=2)
    assert {outcome.provider, outcome.other_results[0].provider} == {a.pubkey, b.pubkey}
    assert len(outcome.other_results) == 1
    assert outcome.text == outcome.other_results[0].text
    results = await stored(relay_url, kinds=[6050], e=[outcome.job_id])
    assert len(results) == 2


async def test_targeted_job_goes_to_that_provider_only(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "a.sqlite") as a, \
            serving(relay_url, openai_double.base_url, tmp_path / "b.sqlite") as b:
        async with customer(relay_url) as client:
            outcome = await client.ask("only b", provider=b.keys.npub, encrypted=False, timeout=30)
    assert outcome.provider == b.pubkey and a.stats.received == 0 and a.stats.ignored == 1


async def test_paid_quote_without_wallet_is_refused_with_nothing_paid(relay_url):
    """A scripted provider (real keys, real relay) asks for money; the client has no wallet."""
    provider_keys = Keys.generate()
    async with RelayPool([relay_url], keys=provider_keys) as pool:
        async with pool.subscribe([_requests()]) as requests:
            async def quote_everything():
                event = await requests.next(30)
                req = JobRequest.from_event(event, provider_keys)
                await pool.publish(JobFeedback.build(provider_keys, req, "payment-required",
                                                     amount_msat=21000, bolt11="lnbcrt210n1fake"))
            quoting = asyncio.create_task(quote_everything())
            async with customer(relay_url) as client:
                with pytest.raises(PaymentRefused, match="21000 msat.*no wallet configured.*pass --wallet"):
                    await client.ask("x", provider=provider_keys.public_key, timeout=30)
            await quoting


def _requests():
    from pylon.nostr.filters import Filter

    return Filter.of(kinds=[5050])


async def test_malformed_requests_get_error_feedback_and_do_not_stop_the_provider(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        sender = Keys.generate()
        async with RelayPool([relay_url], keys=sender) as pool:
            bad = Event.build(sender, 5050, "", [["i", "x", "text"], ["param", "max_tokens", "lots"],
                                                 ["p", provider.pubkey]])
            async with pool.subscribe([_feedback_for(bad.id)]) as feedback:
                await pool.publish(bad)
                fb = JobFeedback.from_event(await feedback.next(30))
        assert fb.status == "error" and "max_tokens must be an integer" in fb.extra
        async with customer(relay_url) as client:
            assert (await client.ask("fine", timeout=30)).text.endswith("fine")
    assert provider.stats.rejected == 1


def _feedback_for(job_id):
    from pylon.nostr.filters import Filter

    return Filter.of(kinds=[7000], e=[job_id])


async def test_provider_restart_mid_flight_loses_nothing_and_runs_nothing_twice(relay_url, openai_double, tmp_path):
    """Jobs in flight when the provider stops, and jobs sent while it is down, are all
    answered exactly once after it comes back."""
    db = tmp_path / "p.sqlite"
    keys = Keys.generate()
    openai_double.hang_next(4)  # the first 4 generations never finish: the provider dies mid-flight
    async with customer(relay_url) as client:
        async with serving(relay_url, openai_double.base_url, db, keys=keys) as provider:
            first = [asyncio.create_task(client.ask(f"early {i}", timeout=60)) for i in range(4)]
            await wait_for(lambda: openai_double.in_flight == 4, what="4 jobs hanging in the backend")
        # provider is down; more jobs arrive meanwhile
        later = [asyncio.create_task(client.ask(f"late {i}", timeout=60)) for i in range(3)]
        await wait_stored(relay_url, 7, kinds=[5050], authors=[client.pubkey])  # sent while it was down
        async with serving(relay_url, openai_double.base_url, db, keys=keys) as provider:
            outcomes = await asyncio.gather(*first, *later)
        with JobStore(db) as store:
            rows = {r.request_id: r for r in store.jobs_in(["done", "error", "processing", "seen", "quoted"])}
    assert sorted(o.text.split(": ", 1)[1] for o in outcomes) == sorted(
        [f"early {i}" for i in range(4)] + [f"late {i}" for i in range(3)])
    for outcome in outcomes:
        results = await stored(relay_url, kinds=[6050], e=[outcome.job_id])
        assert len(results) == 1, "exactly one result per job"
        row = rows[outcome.job_id]
        assert row.status == "done" and row.result_published
    assert sorted(rows[o.job_id].attempts for o in outcomes) == [1, 1, 1, 2, 2, 2, 2]



async def test_the_same_prompt_twice_in_one_second_gets_two_answers(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            first = await client.ask("same", timeout=30)
            second = await client.ask("same", timeout=30)
    assert first.job_id != second.job_id and provider.stats.done == 2


async def test_a_fresh_provider_looks_back_a_bounded_window(relay_url, openai_double, tmp_path):
    """Start-up look-back (issue 17): a request published shortly before the provider started
    (while it was down) is served; one older than the window (`lookback_s`) is not."""
    import time

    from pylon.jobs.nip90 import JobRequest

    old_customer = Keys.generate()
    async with RelayPool([relay_url], keys=old_customer) as pool:
        recent = JobRequest.from_prompt("while you were down").to_event(old_customer, created_at=int(time.time()) - 30)
        ancient = JobRequest.from_prompt("long ago").to_event(old_customer, created_at=int(time.time()) - 2000)
        await pool.publish(recent)
        await pool.publish(ancient)
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", lookback_s=900) as provider:
        await wait_for(lambda: provider.store.status(recent.id) == "done", what="the recent request served")
        async with customer(relay_url) as client:
            await client.ask("new", timeout=30)
        assert provider.store.status(ancient.id) is None
    assert sorted(r["messages"][0]["content"] for r in openai_double.requests) == ["new", "while you were down"]


async def test_a_fresh_provider_does_not_run_again_what_another_already_answered(relay_url, openai_double,
                                                                                   tmp_path):
    """The look-back holds answered jobs too: provider A answers an ask and stops; provider B,
    started afterwards with a new store, finds A's result on the relay and neither runs the
    job again nor replies to it (pylon.provider.answered). A request from the look-back that
    nobody answered is still served (the test above)."""
    from pylon.jobs.nip90 import KIND_FEEDBACK

    async with serving(relay_url, openai_double.base_url, tmp_path / "a.sqlite"):
        async with customer(relay_url) as client:
            answered = await client.ask("answered once", timeout=30)
    assert len(openai_double.requests) == 1
    await asyncio.sleep(1.1)  # B starts a second later (a request stamped in B's first second counts as live)
    async with serving(relay_url, openai_double.base_url, tmp_path / "b.sqlite", lookback_s=900) as late:
        await wait_for(lambda: late.stats.ignored >= 1, what="B to find the answer")
        assert late.store.status(answered.job_id) is None
        async with customer(relay_url) as client:  # B is up and serving
            await client.ask("a new one", timeout=30)
    assert [r["messages"][0]["content"] for r in openai_double.requests] == ["answered once", "a new one"]
    replies = await stored(relay_url, kinds=[KIND_FEEDBACK], e=[answered.job_id], authors=[late.pubkey])
    assert replies == []


async def test_a_long_job_says_processing_then_a_heartbeat_until_its_result(relay_url, openai_double, tmp_path,
                                                                             monkeypatch):
    """One timer per job: `processing` once the job has run PROCESSING_NOTICE_S, then "still
    generating" every HEARTBEAT_S (shortened here) until the result; nothing after it."""
    import pylon.provider.provider as provider_module

    monkeypatch.setattr(provider_module, "PROCESSING_NOTICE_S", 0.05)
    # over a second apart: identical feedback within one second would be one event (same id)
    monkeypatch.setattr(provider_module, "HEARTBEAT_S", 1.05)
    openai_double.latency_s = 2.4
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            outcome = await client.ask("take your time", timeout=30)
        await asyncio.sleep(1.2)  # a heartbeat left running would publish again now
        replies = await stored(relay_url, kinds=[7000], e=[outcome.job_id], authors=[provider.pubkey])
    extras = [e.first_tag("status")[2] if len(e.first_tag("status")) > 2 else "" for e in
              sorted(replies, key=lambda e: e.created_at)]
    assert extras.count("") == 1 and extras.count("still generating") == 2, extras


async def test_a_failed_ask_is_cancelled_so_a_provider_started_later_does_not_run_it(relay_url, openai_double,
                                                                                      tmp_path):
    """An ask that ends with a provider's error publishes its kind-5 cancellation (the customer
    no longer waits), so the relay drops the request and a provider started afterwards with a
    new store does not run it from its look-back (newcomer trial: it did, after the customer
    had long given up)."""
    async with serving(relay_url, openai_double.base_url, tmp_path / "a.sqlite"):
        openai_double.fail_next()
        async with customer(relay_url) as client:
            with pytest.raises(ProviderError) as failed:
                await client.ask("fails once", timeout=30)
    job_id = failed.value.job_id
    assert await stored(relay_url, kinds=[5], e=[job_id])  # the cancellation
    assert await stored(relay_url, ids=[job_id]) == []  # and the relay dropped the request
    await asyncio.sleep(1.1)
    async with serving(relay_url, openai_double.base_url, tmp_path / "b.sqlite", lookback_s=900) as late:
        async with customer(relay_url) as client:  # B is up and serving
            await client.ask("a new one", timeout=30)
        assert late.store.status(job_id) is None
    assert [r["messages"][0]["content"] for r in openai_double.requests] == ["fails once", "a new one"]


async def test_a_delivered_result_frees_its_queue_place_before_the_relay_acknowledges_it(openai_double, tmp_path):
    """Relays fan a result out before their OK (nexus: before its commit), so a customer's next
    job can arrive while the provider still waits for that OK: the finished job must no longer
    count against the customer's queue then. The OK is held back for real: another SQLite
    connection holds the relay database's write lock."""
    import sqlite3

    from nexus_relay import running_relay

    db = tmp_path / "relay.sqlite"
    openai_double.latency_s = 0.5
    async with running_relay(db) as relay:
        async with serving(relay.url, openai_double.base_url, tmp_path / "p.sqlite", concurrency=1) as provider:
            async with customer(relay.url) as client:
                ask = asyncio.create_task(client.ask("deliver me", timeout=30))
                await wait_for(lambda: provider.stats.generations == 1, what="job in the backend")
                blocker = sqlite3.connect(db, timeout=1)
                blocker.execute("BEGIN IMMEDIATE")  # the relay cannot commit (or OK) the result now
                try:
                    outcome = await asyncio.wait_for(ask, 10)  # fanned out before the commit
                    assert outcome.text.endswith("deliver me")
                    assert provider.stats.done == 0  # its OK has not come
                    assert sum(provider.admission.pending.values()) == 0  # but its place is free
                finally:
                    blocker.rollback()
                    blocker.close()
                await wait_for(lambda: provider.stats.done == 1, what="the result acknowledged")
