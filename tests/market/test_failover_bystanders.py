"""Failover is for the provider at work, not for bystanders (newcomer trial, bug 1).

An `error` from a provider that never started on the job (it declined it: a model it does not
serve, a customer it does not take; or a stranger) used to end the attempt once every provider
heard from had "finished", and the job was re-offered: the provider that was already busy with
it (silent until its slot came, or already `processing`) then got the re-sent request too and
ran the job twice. Now only a failure of a provider that was at work on the job (processing,
partial, paid) or that the customer chose makes a re-send; a decline is noted (that provider
leaves the candidates) and the ask keeps waiting for the live providers that have the request.

Scripted providers (real keys, real announcements) on the real embedded relay."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.helpers import customer
from tests.market.test_failover_gaps import watching
from tests.payments.helpers import ScriptedProvider

pytestmark = [pytest.mark.timeout(60)]


async def _declines(p: ScriptedProvider, req) -> None:
    await p.feedback(req, "error", extra="model not served here")


async def test_a_decline_does_not_reoffer_a_job_another_provider_takes(relay_url):
    """B declines at once; A (live) is busy for a moment, then processes it. Before: the error
    grace ran out, the job was re-sent, and A ran it twice."""
    async def busy_then_answers(a: ScriptedProvider, req) -> None:
        await asyncio.sleep(1.0)  # waiting for a free slot: says nothing yet
        await a.feedback(req, "processing")
        await a.result(req, f"answer {len(a.requests)} from a")

    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b:
        a.serve(lambda req: busy_then_answers(a, req))
        b.serve(lambda req: _declines(b, req))
        await a.announce()
        await b.announce()
        async with watching(relay_url) as seen, customer(relay_url) as client:
            outcome = await client.ask("hello", timeout=20, error_grace_s=0.2)
    assert outcome.provider == a.pubkey and outcome.text == "answer 1 from a"
    assert outcome.failover == [] and len(a.requests) == 1 and len(seen) == 1  # asked once, run once
    assert outcome.errors == {b.pubkey: "model not served here"}  # the decline is noted


async def test_a_strangers_error_while_one_is_processing_is_only_noted(relay_url):
    """A is processing (seen by the customer) when an unannounced stranger says `error`."""
    started = asyncio.Event()

    async def works(a: ScriptedProvider, req) -> None:
        await a.feedback(req, "processing")
        started.set()
        await asyncio.sleep(0.8)
        await a.result(req, "done by a")

    async def stranger(c: ScriptedProvider, req) -> None:
        await started.wait()
        await asyncio.sleep(0.1)
        await c.feedback(req, "error", extra="not me")

    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as c:
        a.serve(lambda req: works(a, req))
        c.serve(lambda req: stranger(c, req))
        await a.announce()
        async with watching(relay_url) as seen, customer(relay_url) as client:
            outcome = await client.ask("hello", timeout=20, error_grace_s=0.2)
    assert outcome.provider == a.pubkey and outcome.failover == [] and len(seen) == 1
    assert c.pubkey in outcome.errors


async def test_the_provider_at_work_failing_still_fails_over_and_the_decliner_is_not_blamed(relay_url):
    """B declines, A processes and fails: the job is re-sent (failover) because of A only; the
    re-send avoids both, and C, live, answers it."""
    async def fails(a: ScriptedProvider, req) -> None:
        await asyncio.sleep(0.2)
        await a.feedback(req, "processing")
        await a.feedback(req, "error", extra="GPU fell over")

    async def answers_resends(c: ScriptedProvider, req) -> None:
        if req.avoid:
            await c.feedback(req, "processing")
            await c.result(req, "answer from c")

    async with ScriptedProvider(relay_url, None) as a, ScriptedProvider(relay_url, None) as b, \
            ScriptedProvider(relay_url, None) as c:
        a.serve(lambda req: fails(a, req) if not req.avoid else asyncio.sleep(0))
        b.serve(lambda req: _declines(b, req) if not req.avoid else asyncio.sleep(0))
        c.serve(lambda req: answers_resends(c, req))
        for p in (a, b, c):
            await p.announce()
        async with customer(relay_url) as client:
            outcome = await client.ask("hello", timeout=20, error_grace_s=0.2)
    assert outcome.provider == c.pubkey
    (attempt,) = outcome.failover
    assert attempt["providers"] == [a.pubkey] and attempt["reason"] == "error"  # B only declined
    assert sorted(c.requests[-1].avoid) == sorted([a.pubkey, b.pubkey])
