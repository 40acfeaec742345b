"""Running a provider for money (issue 18), as real `pylon serve` processes on a real relay with a
real dev-wallet ledger: graceful drain with paid jobs in flight, a second signal, the PYLON_HOME
lock, pause/resume; `pylon earnings` equal to what the wallet received."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess

import pytest

from pylon.customer.client import PylonClient
from pylon.nostr.keys import Keys
from pylon.provider.jobstore import JobStore
from tests.e2e.helpers import stored, wait_for
from tests.faults.harness import PYLON, Proc, Tally, ask_all, cli_env
from tests.payments.helpers import paying_customer

pytestmark = pytest.mark.timeout(150)
PRICE = 1_000
FUND = 100_000
ASKS = 4


# invoice-first payments (the job store records each settlement): pay-for-the-key delivery, where
# the provider runs first and sells the key to a sealed result, is another flow (tests/market)
INVOICE_FIRST = ({"key_delivery": False} if "key_delivery" in inspect.signature(PylonClient.__init__).parameters
                 else {})


def _serve(relay_url: str, backend_url: str, home, wallet_uri: str, *extra: str) -> Proc:
    return Proc("provider", [PYLON, "serve", "--relay", relay_url, "--backend", backend_url, "--price-msat",
                             str(PRICE), "--max-tokens-cap", "16", "--wallet", wallet_uri, *extra], env=cli_env(home))


def _home(tmp_path, name: str = "provider-home"):
    home = tmp_path / name
    home.mkdir()
    keys = Keys.generate()
    keys.save(home / "identity.key")
    return keys, home


def _pylon(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYLON, *args], capture_output=True, text=True, timeout=60, env=cli_env(home))


async def _announced(relay_url: str, pubkey: str) -> bool:
    return bool(await stored(relay_url, kinds=[31990], authors=[pubkey]))


async def test_sigterm_drains_paid_jobs_then_withdraws_and_exits(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, home = _home(tmp_path)
    openai_double.latency_s = 2.0  # every paid job is in the backend when SIGTERM arrives
    provider = _serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"), "--drain-timeout", "60")
    await provider.start()
    assert await _announced(relay_url, keys.public_key)
    tally = Tally("drain with paid jobs in flight")
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
            asks = asyncio.ensure_future(ask_all(client, ASKS, tally, timeout=60, provider=keys.public_key))
            await wait_for(lambda: len(openai_double.requests) >= ASKS, timeout=60, what="every paid job running")
            os.killpg(provider.proc.pid, signal.SIGTERM)
            # while draining: no announcement, and a new job for this provider is refused at once
            await wait_for_async(lambda: _announced(relay_url, keys.public_key), want=False)
            with pytest.raises(Exception) as refused:
                await client.ask("one more", timeout=30, provider=keys.public_key)
            assert "shutting down" in str(refused.value)
            await asks
            code = await asyncio.wait_for(provider.proc.wait(), 30)
    finally:
        await provider.stop()
    assert code == 0
    tally.paid_msat = FUND - await cw.balance()
    tally.received_msat = await pw.balance()
    tally.answered_cost_msat = tally.answered * PRICE
    tally.check()
    assert tally.answered == ASKS  # all delivered by the process that was told to stop
    with JobStore(home / "provider.sqlite") as store:
        counts = store.counts()
    assert counts.get("done") == ASKS and not counts.get("processing") and not counts.get("paid")
    # earnings agree with the wallet: received minus refunds
    out = _pylon(home, "earnings", "--json")
    assert out.returncode == 0, out.stderr
    total = json.loads(out.stdout)["total"]
    assert total["net_msat"] == await pw.balance() == total["earned_msat"] == ASKS * PRICE
    assert total["delivered"] == ASKS and total["paid_failed"] == 0


async def wait_for_async(probe, *, want: bool, timeout: float = 30.0) -> None:
    async def loop() -> None:
        while await probe() != want:
            await asyncio.sleep(0.1)
    await asyncio.wait_for(loop(), timeout)


async def test_second_signal_exits_at_once_and_the_job_resumes(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw = dev_ledger.wallet("customer")
    keys, home = _home(tmp_path)
    openai_double.latency_s = 300.0  # the job cannot finish within this test
    provider = _serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"), "--drain-timeout", "600")
    await provider.start()
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
            ask = asyncio.ensure_future(client.ask("slow", timeout=120, provider=keys.public_key))
            await wait_for(lambda: len(openai_double.requests) >= 1, timeout=60, what="the paid job running")
            os.killpg(provider.proc.pid, signal.SIGTERM)
            await wait_for_async(lambda: _announced(relay_url, keys.public_key), want=False)
            os.killpg(provider.proc.pid, signal.SIGTERM)  # the second one: no more waiting
            await asyncio.wait_for(provider.proc.wait(), 30)  # far less than the drain timeout
            ask.cancel()
    finally:
        await provider.stop()
    with JobStore(home / "provider.sqlite") as store:
        rows = store.jobs_in(["processing", "paid"])
    assert len(rows) == 1 and rows[0].paid_at is not None  # paid, left for the next start (run again once)


async def test_one_serve_per_home_and_pause_resume(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw = dev_ledger.wallet("customer")
    keys, home = _home(tmp_path)
    provider = _serve(relay_url, openai_double.base_url, home, dev_ledger.uri("provider"))
    await provider.start()
    try:
        second = await asyncio.to_thread(
            _pylon, home, "serve", "--relay", relay_url, "--backend", openai_double.base_url, "--free")
        assert second.returncode == 2, second.stderr
        assert "another pylon serve" in second.stderr and f"pid {provider.proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr and second.stderr.count("error:") == 1
        status = await asyncio.to_thread(_pylon, home, "serve", "status")
        assert str(provider.proc.pid) in status.stdout

        out = await asyncio.to_thread(_pylon, home, "serve", "pause")
        assert out.returncode == 0, out.stderr
        await wait_for_async(lambda: _announced(relay_url, keys.public_key), want=False)
        async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
            with pytest.raises(Exception) as refused:
                await client.ask("while paused", timeout=30, provider=keys.public_key)
            assert "paused" in str(refused.value)
            out = await asyncio.to_thread(_pylon, home, "serve", "resume")
            assert out.returncode == 0, out.stderr
            await wait_for_async(lambda: _announced(relay_url, keys.public_key), want=True)
            answer = await client.ask("after resume", timeout=60, provider=keys.public_key)
            assert answer.text
    finally:
        await provider.stop()
    # the lock went with the process: another serve may start on this home now, and nothing runs
    status = await asyncio.to_thread(_pylon, home, "serve", "status")
    assert "no pylon serve running" in status.stdout and status.returncode == 1
    out = await asyncio.to_thread(_pylon, home, "serve", "pause")
    assert out.returncode == 2 and "no pylon serve is running" in out.stderr


async def _announced_price(relay_url: str, pubkey: str) -> int | None:
    from pylon.jobs.nip89 import parse_announcement

    events = await stored(relay_url, kinds=[31990], authors=[pubkey])
    return parse_announcement(max(events, key=lambda e: e.created_at)).price_msat if events else None


async def test_sighup_reload_changes_the_price_for_the_next_quote(relay_url, openai_double, dev_ledger, tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, home = _home(tmp_path)
    config = home / "config.toml"
    config.write_text("price_msat = 1000\nmax_tokens_cap = 16\n")
    provider = Proc("provider", [PYLON, "serve", "--relay", relay_url, "--backend", openai_double.base_url,
                                 "--wallet", dev_ledger.uri("provider")], env=cli_env(home))
    await provider.start()
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000, **INVOICE_FIRST) as client:
            await client.ask("at the old price", timeout=60, provider=keys.public_key)
            assert await pw.balance() == 1000
            openai_double.latency_s = 3.0  # a job running across the reload keeps its quote
            running = asyncio.ensure_future(client.ask("running across the reload", timeout=60,
                                                       provider=keys.public_key))
            await wait_for(lambda: len(openai_double.requests) >= 2, timeout=60, what="the second job running")
            config.write_text("price_msat = 2500\nmax_tokens_cap = 16\n")
            out = await asyncio.to_thread(_pylon, home, "serve", "reload")
            assert out.returncode == 0, out.stderr
            await wait_for_async(lambda: _price_is(relay_url, keys.public_key, 2500), want=True)
            await running
            assert await pw.balance() == 2000  # quoted before the reload: the old price
            openai_double.latency_s = 0.0
            await client.ask("at the new price", timeout=60, provider=keys.public_key)
            assert await pw.balance() == 2000 + 2500
        assert provider.proc.returncode is None  # SIGHUP did not stop it
    finally:
        await provider.stop()


async def _price_is(relay_url: str, pubkey: str, price: int) -> bool:
    return await _announced_price(relay_url, pubkey) == price


async def test_log_format_json_keeps_stdout_json_only(relay_url, openai_double, tmp_path):
    keys, home = _home(tmp_path)
    provider = Proc("provider", [PYLON, "serve", "--relay", relay_url, "--backend", openai_double.base_url, "--free",
                                 "--log-format", "json", "--model", openai_double.model], env=cli_env(home))
    await provider.start()
    try:
        first = json.loads(provider.first_line)
        assert first["event"] == "serving" and first["npub"] == keys.npub and first["free"] is True
        async with paying_customer(relay_url, None) as client:
            with pytest.raises(Exception):
                await client.ask("x", model="not-served", timeout=30, provider=keys.public_key)
        os.killpg(provider.proc.pid, signal.SIGTERM)
        rest = (await asyncio.wait_for(provider.proc.stdout.read(), 30)).decode()
    finally:
        await provider.stop()
    assert all(json.loads(line) for line in rest.splitlines() if line.strip())  # nothing but JSON on stdout


async def test_identity_fields_in_the_announcement_and_a_kind0_profile(relay_url, openai_double, tmp_path):
    keys, home = _home(tmp_path)
    (home / "config.toml").write_text('[provider]\nname = "Acme GPUs"\nabout = "H100s in Lisbon"\n'
                                      'picture = "https://acme.example/logo.png"\nlud16 = "tips@acme.example"\n')
    provider = Proc("provider", [PYLON, "serve", "--relay", relay_url, "--backend", openai_double.base_url, "--free",
                                 "--model", openai_double.model], env=cli_env(home))
    await provider.start()
    try:
        await wait_for_async(lambda: _has_profile(relay_url, keys.public_key), want=True)
        [announcement] = await stored(relay_url, kinds=[31990], authors=[keys.public_key])
        content = json.loads(announcement.content)
        assert content["name"] == "Acme GPUs" and content["about"] == "H100s in Lisbon"
        assert content["picture"] == "https://acme.example/logo.png" and content["lud16"] == "tips@acme.example"
        assert content["relays"] == [relay_url]  # connected relays only
        [profile] = await stored(relay_url, kinds=[0], authors=[keys.public_key])
        assert json.loads(profile.content)["lud16"] == "tips@acme.example"
    finally:
        await provider.stop()


async def _has_profile(relay_url: str, pubkey: str) -> bool:
    return bool(await stored(relay_url, kinds=[0], authors=[pubkey]))


async def test_customer_allow_and_deny_lists(relay_url, openai_double, tmp_path):
    from tests.e2e.helpers import customer

    keys, home = _home(tmp_path)
    friend, stranger, banned = Keys.generate(), Keys.generate(), Keys.generate()
    (home / "config.toml").write_text(f'[provider]\nallow = ["{friend.npub}", "{banned.public_key}"]\n'
                                      f'deny = ["{banned.npub}"]\n')
    provider = Proc("provider", [PYLON, "serve", "--relay", relay_url, "--backend", openai_double.base_url, "--free",
                                 "--model", openai_double.model], env=cli_env(home))
    await provider.start()
    try:
        async with customer(relay_url, keys=friend) as client:
            assert (await client.ask("hi", timeout=30, provider=keys.public_key)).text
        for who in (stranger, banned):  # not on the allow list / on the deny list (which wins)
            async with customer(relay_url, keys=who) as client:
                with pytest.raises(Exception, match="private list"):
                    await client.ask("hi", timeout=30, provider=keys.public_key)
    finally:
        await provider.stop()
    assert len(openai_double.requests) == 1
    (home / "config.toml").write_text('[provider]\nallow = ["npub1nonsense"]\n')
    bad = await asyncio.to_thread(_pylon, home, "serve", "--relay", relay_url, "--free", "--backend",
                                  openai_double.base_url)
    assert bad.returncode == 2 and "allow list" in bad.stderr and "Traceback" not in bad.stderr
