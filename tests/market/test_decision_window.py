"""The decision window ends once every live provider has answered (issue 15, paid path).

An untargeted paid job used to wait the whole window (300 ms from the first quote) even when
the quoting provider was the only one there: at one ask at a time that was most of a paid
job's latency. Now the client ends the window as soon as every live provider serving the
model (its NIP-89 view, pylon.customer.live) has answered the job; while one of them has not,
the window holds, so a free provider still beats a quote. Real providers, real relay, real
dev-wallet accounts; a scripted provider where one has to be slow on cue. The windows here
are long (minutes) so that a window that was not ended early shows up as a timed-out ask,
not as a timing."""

from __future__ import annotations

import asyncio

import pytest

from pylon.errors import JobError
from tests.payments.helpers import ScriptedProvider, paid_provider, paying_customer

pytestmark = pytest.mark.timeout(120)
FUNDS = 100_000


async def test_only_provider_answered_window_ends_at_once(relay_url, openai_double, dev_ledger, tmp_path):
    """The one live provider quoted: its quote is paid without waiting out a 10-minute window."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("priced")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=1_000) as paid:
        async with paying_customer(relay_url, cw) as client:
            first = await client.ask("warm up: who is live", timeout=30)  # the default window; the view is read
            client.decision_window_s = 600.0
            outcomes = [await client.ask(f"paid at once {i}", timeout=20) for i in range(3)]
    assert first.provider == paid.pubkey
    assert all(o.provider == paid.pubkey and o.paid_msat == 1_000 for o in outcomes)
    assert await cw.balance() == FUNDS - 4_000 and await pw.balance() == 4_000  # exactly one payment per job
    assert all(any(q["kind"] == "quote" and q["action"] == "taken" for q in o.offers) for o in outcomes)


async def test_window_holds_while_a_live_provider_has_not_answered(relay_url, openai_double, dev_ledger, tmp_path):
    """A live free provider answers 0.5 s after the quote: the window (5 s) waits for it and
    nothing is paid; the ask with a live but silent provider waits out its window."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("priced")
    silent: set[str] = set()

    async def slow_free(free: ScriptedProvider, req) -> None:
        if req.prompt_text in silent:
            return
        await asyncio.sleep(0.5)
        await free.feedback(req, "processing")
        await free.result(req, "free answer")

    async with ScriptedProvider(relay_url, dev_ledger.wallet("free")) as free, \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=1_000) as paid:
        await free.announce()
        free.serve(lambda req: slow_free(free, req))
        async with paying_customer(relay_url, cw) as client:
            warm = await client.ask("warm up: who is live", timeout=30)
            client.decision_window_s = 5.0
            outcome = await client.ask("free one is slower", timeout=30)
            silent.add("nobody else answers")
            client.decision_window_s = 600.0
            with pytest.raises((JobError, TimeoutError)):  # the window holds for the silent live provider
                await client.ask("nobody else answers", timeout=3)
    assert outcome.provider == free.pubkey and outcome.paid_msat == 0
    quotes = [o for o in outcome.offers if o["provider"] == paid.pubkey and o["kind"] == "quote"]
    assert quotes and all(q["action"] == "left" for q in quotes)
    assert await pw.balance() == warm.paid_msat  # the warm-up's 0.3 s window may have paid; nothing since
    assert await cw.balance() + await pw.balance() == FUNDS
