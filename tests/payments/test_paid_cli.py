"""`pylon serve --price-msat --wallet` and `pylon ask --wallet --max-msat --bid-msat --json` as
real processes sharing one dev-wallet ledger; `pylon receipts` shows the payment; and the
paid job against the real CPU vLLM (`pylon demo` is a paid job too)."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from pylon.nostr.keys import Keys
from tests.e2e.test_cli_jobs import PYLON, _env, _pylon

pytestmark = pytest.mark.timeout(300)


async def test_paid_job_from_the_command_line(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", 100_000)
    provider_home, provider_keys = tmp_path / "provider", Keys.generate()
    provider_home.mkdir()
    provider_keys.save(provider_home / "identity.key")
    serve = await asyncio.create_subprocess_exec(
        PYLON, "serve", "--relay", relay_url, "--backend", openai_double.base_url, "--price-msat", "1500",
        "--price-per-1k-tokens-msat", "1000", "--max-tokens-cap", "64", "--wallet", dev_ledger.uri("provider"),
        env=_env(provider_home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    home = tmp_path / "customer"
    try:
        line = (await asyncio.wait_for(serve.stdout.readline(), 60)).decode()
        assert line.startswith(f"serving as {provider_keys.npub}") and "1500 msat per job" in line, line
        # price for max_tokens 20: 1500 + ceil(20 * 1000 / 1000) = 1520 msat
        code, out, err = await _pylon("ask", "paid cli", "--relay", relay_url, "--max-tokens", "20", "--json",
                                      "--wallet", dev_ledger.uri("customer"), "--max-msat", "5000",
                                      "--bid-msat", "2000", home=home)
        assert code == 0, err
        data = json.loads(out)
        assert data["paid_msat"] == 1520 and data["amount_msat"] == 1520 and data["provider"] == provider_keys.public_key
        assert [q["action"] for q in data["quotes"]] == ["paid"] and data["quotes"][0]["amount_msat"] == 1520
        assert data["receipt"]["status"] == "paid" and data["receipt"]["preimage"]
        # a bid below the price: the provider's error names the price; nothing paid
        code, out, err = await _pylon("ask", "too cheap", "--relay", relay_url, "--wallet", dev_ledger.uri("customer"),
                                      "--bid-msat", "1000", "--provider", provider_keys.npub, home=home)
        assert code != 0 and "price is 1564 msat, above your bid of 1000 msat" in err, err
        code, out, err = await _pylon("receipts", "--json", home=home)
        assert code == 0, err
        receipts = json.loads(out)
        assert json.dumps(receipts).count(data["job_id"]) >= 1 and "1520" in out
    finally:
        serve.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.wait(), 30)
    assert serve.returncode == 0
    assert await dev_ledger.wallet("customer").balance() == 100_000 - 1520
    assert await dev_ledger.wallet("provider").balance() == 1520
    log = (await serve.stderr.read()).decode()
    # the money and the outcome at INFO; the quote itself is a routine step (DEBUG, `-v`)
    assert " paid customer=" in log and "done customer=" in log and " payment-required customer=" not in log


async def test_serve_with_a_price_needs_a_wallet(tmp_path):
    code, out, err = await _pylon("serve", "--relay", "ws://127.0.0.1:9", "--price-msat", "10", home=tmp_path / "p")
    assert code != 0 and "--wallet" in err and len(err.strip().splitlines()) == 1


@pytest.mark.vllm
async def test_paid_job_on_the_real_vllm(vllm_server, relay_url, dev_ledger, tmp_path):
    from tests.payments.helpers import paid_provider, paying_customer

    dev_ledger.fund("customer", 50_000)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    async with paid_provider(relay_url, vllm_server.base_url, tmp_path / "p.sqlite", pw, price_msat=1_000,
                             price_per_1k_tokens_msat=1_000) as provider:
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            outcome = await client.ask("Hello", max_tokens=8, timeout=120)
    assert outcome.provider == provider.pubkey and outcome.usage.completion_tokens > 0
    assert outcome.paid_msat == 1_008 and await cw.balance() == 50_000 - 1_008 and await pw.balance() == 1_008
