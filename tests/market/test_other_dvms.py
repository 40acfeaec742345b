"""Reading what other DVM software sends (issue 10, rule 7): nostrdvm seals an encrypted job's
feedback status and amount inside the encrypted content as a JSON tag array, with only
`encrypted`, `p`, `e` in clear. Scripted like nostrdvm on a real relay with real invoices: the
quote is seen, checked against the caps and paid (or refused), exactly as a clear one."""

from __future__ import annotations

import asyncio
import json

import pytest

from pylon.customer.invoice_check import PaymentRefused
from pylon.jobs.nip90 import KIND_FEEDBACK, JobFeedback, JobRequest
from pylon.nostr.crypto import encrypt_to
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys
from tests.payments.helpers import ScriptedProvider, paying_customer

pytestmark = pytest.mark.timeout(60)
FUNDS = 50_000


def _sealed_feedback(keys: Keys, req: JobRequest, tags: list[list[str]]) -> Event:
    """What nostrdvm sends on an encrypted job: the tags encrypted, only e/p/encrypted in clear."""
    content = encrypt_to(keys, req.customer, json.dumps(tags))
    return Event.build(keys, KIND_FEEDBACK, content, [["e", req.id], ["p", req.customer], ["encrypted"]])


def test_sealed_status_amount_and_content_are_read():
    provider, customer = Keys.generate(), Keys.generate()
    req = JobRequest.from_prompt("x")
    req.to_event(customer, encrypted=False)
    event = _sealed_feedback(provider, req, [["status", "payment-required", "pay me"], ["amount", "2000", "lnbcrt1x"],
                                             ["content", "hello"]])
    fb = JobFeedback.from_event(event, customer)
    assert (fb.status, fb.extra, fb.amount_msat, fb.bolt11, fb.content) == ("payment-required", "pay me", 2000,
                                                                            "lnbcrt1x", "hello")


async def test_a_sealed_quote_is_checked_and_paid(relay_url, dev_ledger):
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("dvm")

    async def script(dvm, req):
        inv = await dvm.wallet.make_invoice(2_000, f"job {req.id}", 600)
        await dvm.pool.publish(_sealed_feedback(dvm.keys, req, [["status", "payment-required"],
                                                                ["amount", "2000", inv.bolt11]]))
        for _ in range(200):  # nostrdvm waits for the payment, then answers
            if (await dvm.wallet.lookup_invoice(inv.payment_hash)).value == "settled":
                break
            await asyncio.sleep(0.05)
        await dvm.result(req, "sealed answer", amount_msat=2_000)

    async with ScriptedProvider(relay_url, pw) as dvm:
        dvm.serve(lambda req: script(dvm, req))
        async with paying_customer(relay_url, cw) as client:
            outcome = await client.ask("encrypted please", provider=dvm.pubkey, timeout=20)
    assert outcome.text == "sealed answer" and outcome.paid_msat == 2_000 and outcome.encrypted
    assert await cw.balance() == FUNDS - 2_000 and await pw.balance() == 2_000


async def test_a_sealed_quote_above_the_cap_is_refused(relay_url, dev_ledger):
    dev_ledger.fund("customer", FUNDS)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("dvm")

    async def script(dvm, req):
        inv = await dvm.wallet.make_invoice(20_000, f"job {req.id}", 600)
        await dvm.pool.publish(_sealed_feedback(dvm.keys, req, [["status", "payment-required"],
                                                                ["amount", "20000", inv.bolt11]]))

    async with ScriptedProvider(relay_url, pw) as dvm:
        dvm.serve(lambda req: script(dvm, req))
        async with paying_customer(relay_url, cw) as client:
            with pytest.raises(PaymentRefused) as info:
                await client.ask("too dear", provider=dvm.pubkey, timeout=20)
    assert info.value.reason == "above_max" and await cw.balance() == FUNDS
