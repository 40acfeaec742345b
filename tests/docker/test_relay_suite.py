"""A small end-to-end suite for a relay that other things share (PYLON_TEST_RELAY): the relay
container of the docker stack and the foreign relay image (.ci/docker runs it against both).

Unlike tests/e2e (a fresh relay per test), every job here is targeted at this test's own
provider, so a provider already on the relay (the stack's) and earlier tests' events cannot
interfere. Runs on the embedded relay too when PYLON_TEST_RELAY is unset.
"""

from __future__ import annotations

import pytest

from pylon.customer.client import PylonClient
from pylon.nostr.keys import Keys
from tests.e2e.helpers import serving

pytestmark = pytest.mark.timeout(120)
ANSWER = "This is the OpenAI double answering the prompt: {}"


@pytest.mark.parametrize("encrypted", [False, True])
async def test_targeted_ask_round_trip(relay_url, openai_double, tmp_path, encrypted):
    keys = Keys.generate()
    async with serving(relay_url, openai_double.base_url, tmp_path / "jobs.sqlite", keys=keys):
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            out = await client.ask(f"suite {encrypted}", provider=keys.public_key, encrypted=encrypted, timeout=30)
    assert out.text == ANSWER.format(f"suite {encrypted}")
    assert out.provider == keys.public_key and out.encrypted is encrypted


async def test_streamed_partials_arrive_in_order(relay_url, openai_double, tmp_path):
    keys = Keys.generate()
    openai_double.token_delay_s = 0.01
    prompt = "one two three four five six seven eight"
    async with serving(relay_url, openai_double.base_url, tmp_path / "jobs.sqlite", keys=keys):
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            chunks = [c async for c in client.stream(prompt, provider=keys.public_key, timeout=30)]
    assert "".join(chunks) == ANSWER.format(prompt)


async def test_paid_targeted_job_is_paid_once(relay_url, openai_double, dev_ledger, tmp_path):
    keys = Keys.generate()
    dev_ledger.fund("customer", 50_000)
    async with serving(relay_url, openai_double.base_url, tmp_path / "jobs.sqlite", keys=keys,
                       wallet=dev_ledger.wallet("provider"), price_msat=2_000):
        async with PylonClient([relay_url], keys=Keys.generate(), wallet=dev_ledger.wallet("customer"),
                               max_msat=5_000) as client:
            out = await client.ask("paid suite", provider=keys.public_key, timeout=30)
    assert out.text == ANSWER.format("paid suite") and out.paid_msat == 2_000
