"""An ask without a wallet whose only live provider is priced ends at once (newcomer trial, bug 2).

The priced provider's quote (`payment-required`) is refused for want of a wallet when the
decision window closes; that refusal used to be noticed only when the whole timeout (120 s by
default) had passed. Now the ask ends as soon as no live provider is left that could still
answer for free (pylon.customer.live), with one line saying a priced offer came and there is
no wallet to pay it, and a hint how to set one. While a live free provider has not answered,
it still waits for it (free beats paid).

A real priced Provider (dev-wallet invoices) on the real embedded relay; the asks have long
timeouts so an ask that does not end early shows up as an outer wait_for running out."""

from __future__ import annotations

import asyncio

import pytest

from pylon.customer.client import PaymentRefused
from pylon.customer.invoice_check import NO_WALLET
from tests.cli.stack import cli_env, pylon
from tests.e2e.helpers import customer
from tests.payments.helpers import ScriptedProvider, paid_provider

pytestmark = pytest.mark.timeout(90)


async def test_only_a_priced_provider_and_no_wallet_ends_at_once(relay_url, openai_double, dev_ledger, tmp_path):
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("p"),
                             price_msat=1_000) as priced:
        async with customer(relay_url) as client:
            with pytest.raises(PaymentRefused) as info:
                await asyncio.wait_for(client.ask("hello", timeout=600), 15)  # not the 600 s timeout
    assert info.value.reason == NO_WALLET
    message, hint = info.value.parts()
    assert "priced offer" in message and "1000 msat" in message and priced.keys.npub in message
    assert "wallet" in hint and "max-msat" in hint
    assert openai_double.requests == []  # nothing ran, nothing was paid


async def test_a_live_free_provider_is_still_waited_for(relay_url, openai_double, dev_ledger, tmp_path):
    async def slow_free(free: ScriptedProvider, req) -> None:
        await asyncio.sleep(0.8)
        await free.feedback(req, "processing")
        await free.result(req, "free answer")

    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("p"),
                             price_msat=1_000), ScriptedProvider(relay_url, None) as free:
        free.serve(lambda req: slow_free(free, req))
        await free.announce()
        async with customer(relay_url) as client:
            outcome = await asyncio.wait_for(client.ask("hello", timeout=600, error_grace_s=0.1), 15)
    assert outcome.provider == free.pubkey and outcome.text == "free answer" and outcome.paid_msat == 0


async def test_cli_says_so_in_one_line_and_a_hint(relay_url, openai_double, dev_ledger, tmp_path):
    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("p"),
                             price_msat=1_000) as priced:
        home = tmp_path / "customer"
        code, out, err = await pylon("ask", "hello", "--timeout", "600", home=home, timeout=30,
                                     env=cli_env(home, PYLON_RELAYS=relay_url))
    lines = err.strip().splitlines()
    assert code == 5 and out == "", err
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].startswith("hint:"), err
    assert "priced offer" in lines[0] and "no wallet" in lines[0] and priced.keys.npub in lines[0]
    assert "--wallet" in lines[1] and "--max-msat" in lines[1]


async def test_a_free_provider_failing_then_only_a_priced_offer_reports_the_failure(relay_url, openai_double,
                                                                                      dev_ledger, tmp_path):
    """A free provider at work fails; the re-send (failover) finds only a priced offer and no
    wallet. The answer is the failure that started it, with the offer and the wallet hint after
    it (newcomer trial: only "payment refused (no_wallet)" was said, exit 5, the backend error lost)."""
    from pylon.customer.client import ProviderError

    async def fails(free: ScriptedProvider, req) -> None:
        if req.avoid:
            return  # the re-send avoids it
        await free.feedback(req, "processing")
        await free.feedback(req, "error", extra="backend died mid-way")

    async with paid_provider(relay_url, openai_double.base_url, tmp_path / "p.sqlite", dev_ledger.wallet("p"),
                             price_msat=1_000) as priced, ScriptedProvider(relay_url, None) as free:
        free.serve(lambda req: fails(free, req))
        await free.announce()
        async with customer(relay_url) as client:
            with pytest.raises(ProviderError) as info:
                await asyncio.wait_for(client.ask("hello", timeout=600, error_grace_s=0.1), 30)
    message, hint = info.value.parts()
    assert "backend died mid-way" in message and free.keys.npub in message
    assert "did not pay" in message and priced.keys.npub in message and "wallet" in hint
    assert info.value.exit_code == 4 and openai_double.requests == []
