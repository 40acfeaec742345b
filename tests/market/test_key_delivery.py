"""Pay for the key (issue 10, rule 3): the provider runs the job first, publishes the result
sealed under a fresh key P and invoices sha256(P); paying reveals P. Real provider, real relay,
real dev-wallet accounts (the dev wallet issues invoices for a caller-chosen preimage); scripted
providers for the lies: a result that does not open (fraud report published, checkable by a
third party from the events alone) and an invoice that would not reveal the key (refused)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pylon.customer.client import PaidNoResult
from pylon.customer.invoice_check import PaymentRefused
from pylon.customer.ledger import Ledger
from pylon.jobs.keyed import (
    DELIVERY_TAG, KEY_MODE, KIND_LABEL, SealError, delivery_hash, key_hash, new_key, open_sealed, seal, verify_fraud_report,
)
from pylon.jobs.nip89 import discover
from pylon.jobs.nip90 import JobResult
from pylon.provider.counters import read as read_counters
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import wait_for
from tests.faults.harness import pay_then_sigkill
from tests.payments.helpers import ScriptedProvider, paid_provider, paying_customer

pytestmark = pytest.mark.timeout(120)
FUNDS = 50_000


def test_seal_opens_only_with_its_key():
    key = new_key()
    assert open_sealed(key, seal(key, "the answer")) == "the answer"
    with pytest.raises(SealError):
        open_sealed(new_key(), seal(key, "the answer"))


@pytest.mark.parametrize("targeted", [True, False])
async def test_pay_for_the_key_happy_path(relay_url, openai_double, dev_ledger, tmp_path, targeted):
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    seen_partials: list[str] = []
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=2_000,
                             partial_interval_s=0.0) as provider:
        async with RelayPool([relay_url]) as pool:
            (info,) = [p for p in await discover(pool) if p.pubkey == provider.pubkey]
        assert info.delivery == [KEY_MODE]  # announced in NIP-89
        async with paying_customer(relay_url, cw, key_delivery=True, ledger_path=tmp_path / "c.sqlite") as client:
            outcome = await client.ask("sealed please", provider=provider.pubkey if targeted else None, timeout=30,
                                       on_progress=lambda p: seen_partials.append(p.text or "")
                                       if p.stage == "partial" else None)
            # ran first, result published before payment; the relay fans the result out before
            # its OK, so the customer can hold the answer a moment before the provider marks it done
            await wait_for(lambda: provider.store.status(outcome.job_id) == "done", 10, "the result marked published")
            row = provider.store.get(outcome.job_id)
            # claimed straight from seen with its price; the invoice kept with the sealed result
            assert (row.amount_msat, row.attempts, row.payment_hash) == (2_000, 1, outcome.receipt["payment_hash"])
            assert row.invoice == outcome.receipt["bolt11"] and row.invoice_expires_at > time.time()
            # the provider sees the key bought: paid_at in its store, so earnings and counters count it
            await wait_for(lambda: provider.store.get(outcome.job_id).paid_at is not None, 20, "the key sale recorded")
            counters = read_counters(provider.store._db)
            assert sum(v for (name, _), v in counters.items() if name == "earned_msat") == 2_000
            assert sum(v for (name, _), v in counters.items() if name == "paid") == 1
    # the result's bookkeeping write was not waited for, and is committed by the time the client closed
    with Ledger(tmp_path / "c.sqlite") as ledger:
        assert ledger.get(outcome.receipt["payment_hash"]).result_event_id == outcome.result_event_id
    assert outcome.delivery == KEY_MODE and outcome.text.endswith("sealed please") and outcome.paid_msat == 2_000
    assert outcome.receipt is not None and key_hash(outcome.receipt["preimage"]) == outcome.receipt["payment_hash"]
    assert not seen_partials  # nothing readable before payment
    assert await cw.balance() == FUNDS - 2_000 and await pw.balance() == 2_000


async def _sealed_lie(liar: ScriptedProvider, req, *, content_key: str | None, invoice_key: str) -> None:
    """A sealed result whose content is sealed under `content_key` (None: garbage) and whose
    invoice reveals `invoice_key`; the delivery tag names sha256(invoice_key)."""
    inv = await liar.wallet.make_invoice_with_preimage(2_000, invoice_key, f"job {req.id}", 600)
    honest = JobResult.build(liar.keys, req, "you will never read this", amount_msat=2_000, bolt11=inv.bolt11)
    content = seal(content_key, honest.content) if content_key else "AQ" + "A" * 60
    tags = [t for t in honest.tags if t[:1] != ["amount"]]
    tags += [["amount", "2000", inv.bolt11], [DELIVERY_TAG, KEY_MODE, key_hash(invoice_key)]]
    await liar.pool.publish(Event.build(liar.keys, honest.kind, content, tags))


async def test_a_result_that_does_not_open_gets_a_fraud_report(relay_url, dev_ledger):
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("liar")
    async with ScriptedProvider(relay_url, pw) as liar:
        liar.serve(lambda req: _sealed_lie(liar, req, content_key=new_key(), invoice_key=new_key()))
        async with paying_customer(relay_url, cw, key_delivery=True) as client:
            with pytest.raises(PaidNoResult, match="fraud report") as info:
                await client.ask("cheat me", provider=liar.pubkey, timeout=20)
    assert await pw.balance() == 2_000  # it was paid: and now everyone can see what for
    # a third party, from the relay alone: the report, verified without trusting the reporter
    async with RelayPool([relay_url]) as pool:
        reports = await pool.query([Filter.of(kinds=[KIND_LABEL], p=[liar.pubkey])], timeout=5.0)
    assert len(reports) == 1 and reports[0].id in str(info.value)
    assert verify_fraud_report(reports[0]) == liar.pubkey


async def test_an_honest_result_cannot_be_reported_as_fraud(relay_url, dev_ledger):
    """The check is not a rubber stamp: a report built from a result that opens fails verification."""
    from pylon.jobs.keyed import FraudProof, build_fraud_report
    from pylon.nostr.keys import Keys

    provider, customer = Keys.generate(), Keys.generate()
    key = new_key()
    dev_ledger.fund("x", 1)
    inv = await dev_ledger.wallet("p").make_invoice_with_preimage(1_000, key, "honest", 600)
    event = Event.build(provider, 6050, seal(key, "fine"), [["e", "0" * 64], ["p", customer.public_key],
                                                             ["amount", "1000", inv.bolt11],
                                                             [DELIVERY_TAG, KEY_MODE, key_hash(key)]])
    report = build_fraud_report(customer, FraudProof(event, inv.bolt11, key), "0" * 64)
    with pytest.raises(SealError, match="no fraud"):
        verify_fraud_report(report)


async def test_an_invoice_that_would_not_reveal_the_key_is_not_paid(relay_url, dev_ledger):
    """Take the money and run, key-mode style: the invoice's hash is not the key's. Refused, nothing paid."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("thief")

    async def lie(thief, req):
        key, other = new_key(), new_key()
        inv = await thief.wallet.make_invoice_with_preimage(2_000, other, f"job {req.id}", 600)
        honest = JobResult.build(thief.keys, req, "sealed", amount_msat=2_000, bolt11=inv.bolt11)
        tags = [t for t in honest.tags if t[:1] != ["amount"]]
        tags += [["amount", "2000", inv.bolt11], [DELIVERY_TAG, KEY_MODE, key_hash(key)]]
        await thief.pool.publish(Event.build(thief.keys, honest.kind, seal(key, honest.content), tags))

    async with ScriptedProvider(relay_url, pw) as thief:
        thief.serve(lambda req: lie(thief, req))
        async with paying_customer(relay_url, cw, key_delivery=True) as client:
            with pytest.raises(PaymentRefused, match="would not open"):
                await client.ask("steal", provider=thief.pubkey, timeout=20)
    assert await cw.balance() == FUNDS and await pw.balance() == 0


async def test_customer_killed_between_paying_and_opening_recovers_the_answer(relay_url, openai_double, dev_ledger,
                                                                               tmp_path):
    """SIGKILL right after the wallet paid (before the receipt or the result were recorded): the
    next start settles the receipt from the wallet (preimage) and opens the sealed result with it."""
    from pylon.customer.fetch import lookup_job
    from pylon.nostr.keys import Keys

    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys = Keys.generate()
    keys.save(Path(os.environ["PYLON_HOME"]) / "identity.key")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=3_000) as provider:
        await pay_then_sigkill("tests.payments.crashing_client", relay_url, dev_ledger.path, provider.pubkey)
        with Ledger() as ledger:
            (receipt,) = ledger.receipts()
        assert receipt.status == "pending" and receipt.preimage is None  # died before anything was recorded
        # restart: the receipt is settled from the wallet, and the sealed answer opened with its preimage
        async with paying_customer(relay_url, cw, keys=keys, key_delivery=True) as client:
            with Ledger() as ledger:
                (after,) = ledger.receipts()
            assert after.status == "paid" and after.preimage
            found = await lookup_job(client.pool, keys, after.job_id, provider=provider.pubkey, preimage=after.preimage)
    assert found.result is not None and found.result.text.endswith("crash after paying")
    assert await cw.balance() == FUNDS - 3_000 and await pw.balance() == 3_000


@pytest.mark.vllm
async def test_pay_for_the_key_on_the_real_vllm(vllm_server, relay_url, dev_ledger, tmp_path):
    """The same flow in front of the real CPU vLLM: generated first, sealed, bought, opened."""
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    async with paid_provider(relay_url, vllm_server.base_url, tmp_path / "p.sqlite", pw, price_msat=1_000,
                             price_per_1k_tokens_msat=1_000) as provider:
        async with paying_customer(relay_url, cw, key_delivery=True) as client:
            outcome = await client.ask("Say something.", provider=provider.pubkey, max_tokens=12, timeout=120)
    assert outcome.delivery == KEY_MODE and outcome.text and outcome.paid_msat == 1_012
    assert outcome.usage.completion_tokens and await pw.balance() == 1_012


async def test_a_key_job_left_quoted_by_an_earlier_version_is_run_and_sealed(relay_url, openai_double, dev_ledger,
                                                                           tmp_path):
    """Jobs paid for the key no longer stop at `quoted`, but a store written before may hold
    one: the restarted provider claims it from there with its price and delivers it sealed."""
    from pylon.jobs.keyed import DELIVERY_PARAM
    from pylon.jobs.nip90 import JobRequest
    from pylon.nostr.keys import Keys
    from pylon.provider.jobstore import JobStore

    customer = Keys.generate()
    request = JobRequest.from_prompt("left quoted", max_tokens=8)
    request.extra_params[DELIVERY_PARAM] = KEY_MODE
    event = request.to_event(customer)
    db = tmp_path / "p.sqlite"
    with JobStore(db) as store:
        assert store.record_seen(event.id, customer.public_key, event.created_at, event.to_json())
        assert store.transition(event.id, "quoted", amount_msat=2_000, model=None)
    async with RelayPool([relay_url]) as pool:
        async with pool.subscribe([Filter.of(kinds=[6050], e=[event.id])]) as sub:
            async with paid_provider(relay_url, openai_double.base_url, db, dev_ledger.wallet("provider"),
                                     price_msat=2_000) as provider:
                sealed = await sub.next(timeout=30)
                await wait_for(lambda: provider.store.status(event.id) == "done", 20, "the resumed job done")
                row = provider.store.get(event.id)
    assert delivery_hash(sealed) == row.payment_hash and row.invoice and row.attempts == 1
    assert row.amount_msat == 2_000


async def test_a_key_job_interrupted_while_running_is_sealed_when_rerun(relay_url, openai_double, dev_ledger,
                                                                        tmp_path):
    """A job paid for the key is claimed with its price and nothing paid; the provider dies
    while it runs (a restart, a worker killed). The restarted provider reruns it sealed, with a
    new invoice: before, the rerun took the paid-first path and published the answer in the
    clear, a priced answer given away (found by a newcomer trial with `serve --workers 2`)."""
    from pylon.jobs.keyed import DELIVERY_PARAM
    from pylon.jobs.nip90 import JobRequest
    from pylon.nostr.keys import Keys
    from pylon.provider.jobstore import JobStore

    customer = Keys.generate()
    request = JobRequest.from_prompt("interrupted while running", max_tokens=8)
    request.extra_params[DELIVERY_PARAM] = KEY_MODE
    event = request.to_event(customer)
    db = tmp_path / "p.sqlite"
    with JobStore(db) as store:  # what the first process left: claimed with its price, running, unpaid
        assert store.record_seen(event.id, customer.public_key, event.created_at, event.to_json())
        assert store.claim_processing(event.id, amount_msat=2_000, model=None)
    async with RelayPool([relay_url]) as pool:
        async with pool.subscribe([Filter.of(kinds=[6050], e=[event.id])]) as sub:
            async with paid_provider(relay_url, openai_double.base_url, db, dev_ledger.wallet("provider"),
                                     price_msat=2_000) as provider:
                result = await sub.next(timeout=30)
                await wait_for(lambda: provider.store.get(event.id).invoice is not None, 20, "the rerun's invoice")
                row = provider.store.get(event.id)
    assert delivery_hash(result) == row.payment_hash and row.invoice  # sealed, its key for sale
    assert "interrupted while running" not in result.content and row.paid_at is None and row.attempts == 2
    assert await dev_ledger.wallet("provider").balance() == 0  # nothing was paid, nothing given away
