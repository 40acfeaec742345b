"""Choosing among offers (issue 10, rule 2): an untargeted job collects offers for a decision
window, then a free provider beats any paid quote, the cheapest acceptable quote wins among
paid ones (ties by score), `avoid` is honoured, and never more than one payment per job.
Real providers (free and priced) on a real relay with real dev-wallet accounts; scripted
providers where a provider has to misbehave on cue."""

from __future__ import annotations

import asyncio

import pytest

from pylon.customer.scoreboard import ProviderScore, Scoreboard
from tests.e2e.helpers import serving
from tests.payments.helpers import ScriptedProvider, paid_provider, paying_customer

pytestmark = pytest.mark.timeout(180)
FUNDS = 100_000


async def test_free_beats_priced_over_many_runs(relay_url, openai_double, dev_ledger, tmp_path):
    """A free and a priced provider both online: over many untargeted asks the customer pays nothing.
    The free one's backend takes 0.3 s, so the priced quote comes first and is seen: the free
    provider's `processing` (sent once its job has run PROCESSING_NOTICE_S) beats it within the
    decision window."""
    from tests.peers.openai_double import OpenAIDouble

    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("priced")
    async with OpenAIDouble(latency_s=0.3) as slow, \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "paid.sqlite", pw, price_msat=1_000) as paid, \
            serving(relay_url, slow.base_url, tmp_path / "free.sqlite", free=True) as free:
        async with paying_customer(relay_url, cw) as client:
            outcomes = [await client.ask(f"race {i}", timeout=30) for i in range(8)]
    assert await cw.balance() == FUNDS and await pw.balance() == 0
    assert all(o.paid_msat == 0 and o.provider == free.pubkey for o in outcomes)
    left = [q for o in outcomes for q in o.offers if q["provider"] == paid.pubkey]
    assert left and all(q["action"] == "left" for q in left)  # the quotes were seen, and left
    assert all(any(q["provider"] == free.pubkey and q["action"] == "taken" for q in o.offers) for o in outcomes)


async def test_cheapest_quote_is_paid_whatever_the_arrival_order(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUNDS)
    cw, w_cheap, w_dear = dev_ledger.wallet("customer"), dev_ledger.wallet("cheap"), dev_ledger.wallet("dear")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "d.sqlite", w_dear, price_msat=3_000), \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "c.sqlite", w_cheap, price_msat=1_000) as cheap:
        async with paying_customer(relay_url, cw) as client:
            outcome = await client.ask("cheapest please", timeout=30)
    assert outcome.provider == cheap.pubkey and outcome.paid_msat == 1_000
    assert await cw.balance() == FUNDS - 1_000 and await w_dear.balance() == 0
    quotes = {q["amount_msat"]: q for q in outcome.offers if q["kind"] == "quote"}
    assert quotes[1_000]["action"] == "taken" and "cheapest" in quotes[1_000]["reason"]
    assert quotes[3_000]["action"] == "left" and quotes[3_000]["reason"]
    assert outcome.route == "cheapest"


async def test_avoid_and_route_best_use_the_scoreboard(relay_url, openai_double, dev_ledger, tmp_path):
    """`avoid` skips a provider entirely; `route="best"` pays the higher-scored one though dearer."""
    dev_ledger.fund("customer", FUNDS)
    cw, w_a, w_b = dev_ledger.wallet("customer"), dev_ledger.wallet("a"), dev_ledger.wallet("b")
    board = Scoreboard(tmp_path / "scores.sqlite")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "a.sqlite", w_a, price_msat=1_000) as a, \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "b.sqlite", w_b, price_msat=2_000) as b:
        for i in range(3):  # evidence: a failed three times, b delivered three times
            board.record(f"old{i}", a.pubkey, "failed")
            board.record(f"old{i}", b.pubkey, "delivered", first_reply_s=0.01)
        async with paying_customer(relay_url, cw, scoreboard=board) as client:
            avoided = await client.ask("not a", timeout=30, avoid=[a.keys.npub])
            best = await client.ask("the best", timeout=30, route="best")
            cheapest = await client.ask("the cheapest", timeout=30)
    assert avoided.provider == b.pubkey and avoided.paid_msat == 2_000
    # the avoid tag (pylon.jobs.nip90 AVOID_TAG) told a to skip the job: it never quoted
    assert all(o["provider"] != a.pubkey for o in avoided.offers)
    assert best.provider == b.pubkey and best.route == "best"
    assert cheapest.provider == a.pubkey and cheapest.paid_msat == 1_000
    assert await cw.balance() == FUNDS - 5_000
    board.close()


async def test_free_provider_that_fails_hands_over_to_the_quote(relay_url, openai_double, dev_ledger, tmp_path):
    """A free provider says processing, then error: the pending quote is paid, once."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("priced")

    async def flaky(free, req):
        if req.prompt_text != "someone":  # an earlier test's job on a shared relay
            return
        await free.feedback(req, "processing")
        await asyncio.sleep(0.8)
        await free.feedback(req, "error", extra="out of memory")

    async with ScriptedProvider(relay_url, dev_ledger.wallet("free")) as free, \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=1_500) as paid:
        free.serve(lambda req: flaky(free, req))
        async with paying_customer(relay_url, cw) as client:
            outcome = await client.ask("someone", timeout=30)
    assert outcome.provider == paid.pubkey and outcome.paid_msat == 1_500
    assert await cw.balance() == FUNDS - 1_500 and await pw.balance() == 1_500
    kinds = {(o["provider"], o["kind"]): o for o in outcome.offers}
    assert kinds[(free.pubkey, "free")]["action"] == "left" and "out of memory" in kinds[(free.pubkey, "free")]["reason"]
    assert kinds[(paid.pubkey, "quote")]["action"] == "taken"


async def test_cli_avoid_and_json_offers(relay_url, openai_double, dev_ledger, tmp_path):
    """`pylon ask --avoid NPUB --json`: the avoided cheap provider is listed and left, the other paid."""
    import json

    from tests.e2e.test_cli_jobs import _pylon

    dev_ledger.fund("customer", FUNDS)
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "c.sqlite", dev_ledger.wallet("cheap"),
                             price_msat=1_000) as cheap, \
            paid_provider(relay_url, openai_double.base_url, tmp_path / "d.sqlite", dev_ledger.wallet("dear"),
                          price_msat=2_000) as dear:
        code, out, err = await _pylon("ask", "not the cheap one", "--relay", relay_url, "--json", "--avoid",
                                      cheap.keys.npub, "--route", "cheapest", "--wallet", dev_ledger.uri("customer"),
                                      "--timeout", "30", home=tmp_path / "customer")
    assert code == 0, err
    data = json.loads(out)
    assert data["provider"] == dear.pubkey and data["paid_msat"] == 2_000 and data["route"] == "cheapest"
    by_provider = {o["provider"]: o for o in data["offers"]}
    assert cheap.pubkey not in by_provider  # told by the avoid tag, it skipped the job (no quote)
    assert cheap.stats.ignored >= 1
    assert by_provider[dear.pubkey]["action"] == "taken"
    assert await dev_ledger.wallet("cheap").balance() == 0


def test_scoreboard_reads_only_new_rows_and_sees_other_writers(tmp_path):
    """scores() folds in the rows written since its last read, this board's and another
    process's on the same file (a second Scoreboard stands in for it), with the same counts
    and medians a full read of the file gives."""
    path = tmp_path / "scores.sqlite"
    mine, other = Scoreboard(path, flush_every=1), Scoreboard(path, flush_every=1)
    mine.record("j1", "a", "delivered", first_reply_s=1.0, tokens_per_s=10.0, paid_msat=5)
    first = mine.scores()
    assert first["a"].delivered == 1 and first["a"].first_reply_s == 1.0
    other.record("j2", "a", "failed", first_reply_s=3.0)
    other.record("j2", "b", "paid_not_delivered", paid_msat=7)
    mine.record("j3", "a", "delivered", first_reply_s=2.0, tokens_per_s=30.0, paid_msat=5)
    now = mine.scores()
    assert first["a"].delivered == 1  # an earlier snapshot does not change under its reader
    assert (now["a"].delivered, now["a"].failed, now["a"].paid_msat) == (2, 1, 10)
    assert now["a"].first_reply_s == 2.0 and now["a"].tokens_per_s == 20.0
    assert now["b"].paid_not_delivered == 1 and now["b"].score == ProviderScore("b", paid_not_delivered=1).score
    fresh = Scoreboard(path)  # a full read of the file
    assert {p: s.to_dict() for p, s in fresh.scores().items()} == {p: s.to_dict() for p, s in now.items()}
    for board in (mine, other, fresh):
        board.close()


def test_scoreboard_counts_its_own_outcomes_without_flushing(tmp_path):
    """A decision reads the scores after every paid job: our own outcomes count at once, from
    memory, and stay buffered (one write per `flush_every`, not one per decision); a row
    another writer adds is still seen, once."""
    import sqlite3

    path = tmp_path / "scores.sqlite"
    mine, other = Scoreboard(path, flush_every=32), Scoreboard(path, flush_every=1)
    mine.record("j1", "a", "delivered", first_reply_s=1.0)
    assert mine.scores()["a"].delivered == 1
    mine.record("j2", "a", "stalled")
    assert (mine.scores()["a"].delivered, mine.scores()["a"].stalled) == (1, 1)
    assert not path.exists() or sqlite3.connect(path).execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 0
    other.record("j3", "a", "failed")
    mine.flush()  # our rows reach the file; reading it again must not count them twice
    other.record("j4", "b", "delivered")
    board = mine.scores()
    assert (board["a"].delivered, board["a"].stalled, board["a"].failed, board["b"].delivered) == (1, 1, 1, 1)
    assert {p: s.to_dict() for p, s in Scoreboard(path).scores().items()} == {p: s.to_dict() for p, s in board.items()}
    for b in (mine, other):
        b.close()
