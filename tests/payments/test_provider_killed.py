"""The provider process is SIGKILLed after the customer paid and while the job runs; on the
next start it serves that job: exactly one payment, one result, one generation completed."""

from __future__ import annotations

import asyncio
import signal

import pytest

from pylon.provider.jobstore import JobStore
from pylon.nostr.keys import Keys
from tests.e2e.helpers import stored, wait_for
from tests.e2e.test_cli_jobs import PYLON, _env
from tests.payments.helpers import paying_customer

pytestmark = pytest.mark.timeout(300)


async def _start_serve(relay_url: str, backend: str, home, wallet_uri: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        PYLON, "serve", "--relay", relay_url, "--backend", backend, "--price-msat", "1000",
        "--wallet", wallet_uri, env=_env(home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert line.startswith("serving as"), line
    return proc


async def test_provider_killed_between_settlement_and_serving(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 20_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    home, keys = tmp_path / "provider", Keys.generate()
    home.mkdir()
    keys.save(home / "identity.key")
    openai_double.hang_next(1)  # the first generation never ends: the job is paid and running
    serve = await _start_serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"))
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            ask = asyncio.create_task(client.ask("survive a crash", provider=keys.public_key,
                                                 encrypted=False, timeout=120))
            await wait_for(lambda: openai_double.in_flight == 1, timeout=60, what="the paid job generating")
            assert await pw.balance() == 1_000  # settled before the provider dies
            serve.send_signal(signal.SIGKILL)
            await serve.wait()
            assert not ask.done()
            serve = await _start_serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"))
            outcome = await ask
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
            await asyncio.wait_for(serve.wait(), 30)
    assert outcome.paid_msat == 1_000 and outcome.provider == keys.public_key
    assert await cw.balance() == 19_000 and await pw.balance() == 1_000
    assert len(openai_double.requests) == 2  # the killed generation and its one re-run
    assert len(await stored(relay_url, kinds=[6050], e=[outcome.job_id])) == 1
    with JobStore(home / "provider.sqlite") as store:
        row = store.get(outcome.job_id)
        assert row.status == "done" and store.counts() == {"done": 1}
