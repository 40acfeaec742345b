"""Several models on several backends in one provider (issue 18): a real `pylon serve` process with
two `[[models]]` tables pointing at two OpenAI doubles, one announcement listing both, each job
routed to its model's backend and quoted at its model's price (real relay, dev-wallet ledger)."""

from __future__ import annotations

import asyncio

import pytest

from pylon.jobs.nip89 import parse_announcement
from pylon.nostr.keys import Keys
from tests.e2e.helpers import stored
from tests.faults.harness import PYLON, Proc, cli_env
from tests.ops.test_serve_lifecycle import INVOICE_FIRST
from tests.payments.helpers import paying_customer
from tests.peers.openai_double import OpenAIDouble

pytestmark = pytest.mark.timeout(120)


async def test_two_models_on_two_backends_in_one_process(relay_url, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    a = OpenAIDouble(models=["alpha"], reply=lambda req: "from alpha").start_in_thread()
    b = OpenAIDouble(models=["beta"], reply=lambda req: "from beta").start_in_thread()
    home = tmp_path / "home"
    home.mkdir()
    keys = Keys.generate()
    keys.save(home / "identity.key")
    (home / "config.toml").write_text(
        f'price_msat = 1000\nmax_tokens_cap = 16\n'
        f'[[models]]\nname = "alpha"\nbackend = "{a.base_url}"\nmax_concurrency = 2\n'
        f'[[models]]\nname = "beta"\nbackend = "{b.base_url}"\nprice_msat = 3000\n')
    provider = Proc("provider", [PYLON, "serve", "--relay", relay_url, "--wallet", dev_ledger.uri("provider")],
                    env=cli_env(home))
    try:
        await provider.start()
        assert "alpha" in provider.first_line and "beta" in provider.first_line
        events = await stored(relay_url, kinds=[31990], authors=[keys.public_key])
        info = parse_announcement(events[0])
        assert sorted(info.models) == ["alpha", "beta"] and info.price_msat == 3000  # the highest: no bid short
        async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
            ra = await client.ask("hi", model="alpha", timeout=60, provider=keys.public_key)
            assert await pw.balance() == 1000
            rb = await client.ask("hi", model="beta", timeout=60, provider=keys.public_key)
            assert await pw.balance() == 1000 + 3000
        assert ra.text == "from alpha" and rb.text == "from beta"
        assert [r["model"] for r in a.requests] == ["alpha"] and [r["model"] for r in b.requests] == ["beta"]
        # one backend down: its model is withdrawn from intake, the other keeps serving
        b.stop_thread()
        async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
            ra2 = await client.ask("again", model="alpha", timeout=60, provider=keys.public_key)
            assert ra2.text == "from alpha"
    finally:
        await provider.stop()
        a.stop_thread()
        b.stop_thread()
