"""Failover (issue 10, rule 5): when the provider at work errors or stops mid-stream, the job
is asked again as a new request that avoids it, within the same timeout and budget, and paid
at most once. Scripted providers on a real relay with real dev-wallet invoices."""

from __future__ import annotations

import asyncio

import pytest

from pylon.customer.ledger import Ledger
from pylon.customer.scoreboard import Scoreboard
from tests.payments.helpers import ScriptedProvider, paying_customer

pytestmark = pytest.mark.timeout(90)
FUNDS = 50_000


async def _pay_first(provider: ScriptedProvider, req, price: int = 2_000) -> None:
    """An honest pay-first provider that missed the first request (it answers from the second on)."""
    if len(provider.requests) == 1:
        return
    inv = await provider.wallet.make_invoice(price, f"job {req.id}", 600)
    await provider.feedback(req, "payment-required", amount_msat=price, bolt11=inv.bolt11)
    for _ in range(400):
        if (await provider.wallet.lookup_invoice(inv.payment_hash)).value == "settled":
            await provider.feedback(req, "processing")
            await provider.result(req, "the second provider's answer", amount_msat=price)
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["stalls_mid_stream", "errors"])
async def test_the_job_is_reoffered_and_paid_once(relay_url, dev_ledger, tmp_path, how):
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("second")

    async def flaky(a, req):
        if len(a.requests) > 1:
            return  # only the first request (the failover avoids it anyway)
        await a.feedback(req, "processing")
        await a.feedback(req, "partial", content="Half an ans", offset=0)
        if how == "errors":
            await asyncio.sleep(0.3)
            await a.feedback(req, "error", extra="GPU fell over")
        # stalls: nothing more, ever

    board = Scoreboard(tmp_path / "scores.sqlite")
    async with ScriptedProvider(relay_url, dev_ledger.wallet("first")) as a, ScriptedProvider(relay_url, pw) as b:
        a.serve(lambda req: flaky(a, req))
        b.serve(lambda req: _pay_first(b, req))
        await b.announce()  # somebody else is live: the job is worth re-sending
        async with paying_customer(relay_url, cw, stall_s=1.0, scoreboard=board) as client:
            outcome = await client.ask("keep going", timeout=40, error_grace_s=0.2)
    assert outcome.text == "the second provider's answer" and outcome.provider == b.pubkey
    assert outcome.paid_msat == 2_000 and await cw.balance() == FUNDS - 2_000 and await pw.balance() == 2_000
    (attempt,) = outcome.failover
    assert attempt["providers"] == [a.pubkey]
    assert b.requests[-1].avoid == [a.pubkey]  # the re-send tells the failed provider to skip it
    assert attempt["reason"] == ("stalled" if how == "stalls_mid_stream" else "error")
    with Ledger() as ledger:
        assert [r.status for r in ledger.receipts()] == ["paid"]  # one payment for one answer
    score = board.score_of(a.pubkey)
    assert (score.stalled if how == "stalls_mid_stream" else score.failed) == 1
    board.close()


async def test_a_relay_that_goes_away_mid_job_is_not_the_providers_stall(tmp_path):
    """The only relay stops while the provider works: the silence is ours. The ask says the
    relays are gone (RelayError, a hint to fetch the result later), and the provider is not
    marked stalled, locally or in a review (before: "provider … went silent", exit 4)."""
    from nexus_relay import running_relay
    from pylon.customer.client import PylonClient
    from pylon.errors import RelayError
    from pylon.nostr.keys import Keys

    board = Scoreboard(tmp_path / "scores.sqlite")
    async with running_relay(tmp_path / "relay.sqlite") as relay:
        async with ScriptedProvider(relay.url, None) as a:
            at_work = asyncio.Event()

            async def works_slowly(req):
                await a.feedback(req, "processing")
                at_work.set()

            a.serve(works_slowly)
            client = PylonClient([relay.url], keys=Keys.generate(), stall_s=1.0, scoreboard=board)
            await client.start()
            asking = asyncio.create_task(client.ask("are you there?", provider=a.pubkey, timeout=30))
            await asyncio.wait_for(at_work.wait(), 20)
    try:  # the relay has stopped under the ask
        with pytest.raises(RelayError, match="no relay is connected") as gone:
            await asyncio.wait_for(asking, 30)
        assert "pylon result" in str(gone.value)
    finally:
        await client.close()
    assert board.score_of(a.pubkey).stalled == 0
    board.close()
