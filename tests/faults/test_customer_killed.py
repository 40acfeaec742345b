"""A customer process SIGKILLed right after paying (before it could even record the payment):
the provider serves the paid job anyway; the next start on the same PYLON_HOME recovers the
receipt from the wallet, and `pylon result JOB_ID` fetches the answer from the relays."""

from __future__ import annotations

import asyncio
import json

import pytest

from pylon.customer.ledger import Ledger
from tests.e2e.helpers import wait_for
from tests.faults.harness import PYLON, Tally, backend_proc, cli_env, free_port, pay_then_sigkill
from tests.payments.helpers import paid_provider

pytestmark = pytest.mark.timeout(120)
PRICE = 3_000


async def test_customer_killed_after_paying_gets_its_answer_after_restart(relay_url, openai_double, dev_ledger,
                                                                          tmp_path, pylon_home):
    dev_ledger.fund("customer", 50_000)
    pw = dev_ledger.wallet("provider")
    tally = Tally("customer killed after paying")
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", pw, price_msat=PRICE) as provider:
        await pay_then_sigkill("tests.payments.crashing_client", relay_url, dev_ledger.path, provider.pubkey)
        tally.asked = 1
        with Ledger() as ledger:
            (receipt,) = ledger.receipts()
        await wait_for(lambda: provider.store.status(receipt.job_id) == "done", what="the paid job served")
        # the restarted customer: same PYLON_HOME, asks for the job's result by id
        run = await asyncio.create_subprocess_exec(
            PYLON, "result", receipt.job_id, "--relay", relay_url, "--wallet", dev_ledger.uri("customer"), "--json",
            env=cli_env(pylon_home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()
    data = json.loads(out)
    assert data["text"] and data["provider"] == provider.pubkey
    tally.answered = 1
    with Ledger() as ledger:
        (after,) = ledger.receipts()
    assert after.status == "paid" and after.result_event_id == data["result_event_id"]
    await tally.settle(dev_ledger.wallet("customer"), pw, fund=50_000, price=PRICE)
    tally.check()


async def test_customer_killed_after_paying_a_job_that_then_fails_is_refunded(relay_url, dev_ledger, tmp_path,
                                                                              pylon_home):
    """The worst pair: the customer dies after paying and the backend dies too. The provider
    retries until the job's deadline, offers the refund on its `error`; the customer's next
    `pylon result JOB_ID --wallet` finds the offer on the relays and gets the money back."""
    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    tally = Tally("customer killed after paying, backend dead")
    port = free_port()
    backend = await backend_proc(port, latency_ms=3000).start()
    try:
        async with paid_provider(relay_url, f"http://127.0.0.1:{port}/v1", tmp_path / "p.sqlite", pw,
                                 price_msat=PRICE, models=["double-model"], paid_job_deadline_s=2.0) as provider:
            await pay_then_sigkill("tests.faults.crash_after_paying", relay_url, dev_ledger.path, provider.pubkey)
            tally.asked = 1
            await backend.kill()
            with Ledger() as ledger:
                (receipt,) = ledger.receipts()
            try:
                await wait_for(lambda: (provider.store.get(receipt.job_id) or receipt).refund_status == "offered",
                               timeout=60, what="the refund offered")
            except AssertionError:
                raise AssertionError(f"job row: {provider.store.get(receipt.job_id)}") from None
            run = await asyncio.create_subprocess_exec(
                PYLON, "result", receipt.job_id, "--relay", relay_url, "--wallet", dev_ledger.uri("customer"),
                env=cli_env(pylon_home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(run.communicate(), 90)
            assert provider.store.get(receipt.job_id).refund_status == "refunded"
    finally:
        await backend.kill()
    assert run.returncode != 0 and "refunded" in err.decode() and "Traceback" not in err.decode(), err.decode()
    tally.failed_cleanly = 1
    with Ledger() as ledger:
        (after,) = ledger.receipts()
    assert (after.status, after.refund_status, after.refund_msat) == ("paid", "refunded", PRICE)
    tally.refunded = 1
    await tally.settle(cw, pw, fund=50_000, price=PRICE)
    tally.check()
