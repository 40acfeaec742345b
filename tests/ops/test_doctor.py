"""`pylon doctor`: each kind of failure gets its own message and fix; a healthy setup passes.

Real parts throughout: the embedded relay (or PYLON_TEST_RELAY), a real dev-wallet ledger, and
the OpenAI-compatible server double for the backend (the real vLLM is exercised by the jobs
tests; here the double keeps doctor's tests fast). Dead endpoints are ports nothing listens on.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from pylon.ops.config import Settings
from pylon.ops.doctor import Level, check_backend, check_relay, check_wallet, run_doctor

SECRET = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv("PYLON_" + name.upper(), raising=False)


def by_step(findings, step):
    return next(f for f in findings if f.step == step)


async def test_healthy_relay_round_trip(relay_url):
    findings = await check_relay(relay_url, timeout=5)
    assert [f.level for f in findings if f.step in ("connect", "round trip")] == [Level.OK, Level.OK]
    assert "read it back" in by_step(findings, "round trip").detail


@pytest.mark.embedded_relay
async def test_nip11_reported_from_embedded_relay(relay_url):
    nip11 = by_step(await check_relay(relay_url, timeout=5), "nip11")
    assert nip11.level is Level.OK and "NIPs" in nip11.detail


async def test_dead_relay(unused_tcp_port):
    findings = await check_relay(f"ws://127.0.0.1:{unused_tcp_port}", timeout=2)
    connect = by_step(findings, "connect")
    assert connect.level is Level.FAIL
    assert "cannot connect" in connect.detail
    assert "nothing listens there" in connect.fix and "pylon relay" in connect.fix
    assert by_step(findings, "round trip").level is Level.SKIP


async def test_not_a_relay_url():
    finding = (await check_relay("http://127.0.0.1:1", timeout=1))[0]
    assert finding.level is Level.FAIL and "ws://" in finding.fix


async def test_relay_that_never_answers(unused_tcp_port):
    """A websocket server that accepts and then stays silent: the round trip times out."""
    import websockets

    async def silent(ws):
        await ws.wait_closed()

    async with websockets.serve(silent, "127.0.0.1", unused_tcp_port):
        findings = await check_relay(f"ws://127.0.0.1:{unused_tcp_port}", timeout=0.5)
    assert by_step(findings, "connect").level is Level.OK
    rt = by_step(findings, "round trip")
    assert rt.level is Level.FAIL and "no EOSE" in rt.detail


async def test_relay_that_refuses_events(unused_tcp_port):
    """A relay that answers OK false with a NIP-01 prefix: the prefix decides the fix."""
    import websockets

    async def refusing(ws):
        async for frame in ws:
            msg = json.loads(frame)
            if msg[0] == "REQ":
                await ws.send(json.dumps(["EOSE", msg[1]]))
            elif msg[0] == "EVENT":
                await ws.send(json.dumps(["OK", msg[1]["id"], False, "restricted: members only"]))

    async with websockets.serve(refusing, "127.0.0.1", unused_tcp_port):
        rt = by_step(await check_relay(f"ws://127.0.0.1:{unused_tcp_port}", timeout=2), "round trip")
    assert rt.level is Level.FAIL and "restricted: members only" in rt.detail
    assert "known pubkeys" in rt.fix


async def test_dead_backend(unused_tcp_port):
    [finding] = await check_backend(f"http://127.0.0.1:{unused_tcp_port}/v1", timeout=2)
    assert finding.level is Level.FAIL
    assert finding.detail.startswith("cannot reach the backend")
    assert "vllm serve" in finding.fix


async def test_backend_wrong_path(openai_double):
    base = openai_double.base_url.removesuffix("/v1") + "/wrong"
    [finding] = await check_backend(base, timeout=2)
    assert finding.level is Level.FAIL and "/v1" in finding.fix


async def test_healthy_backend_and_missing_model(openai_double):
    findings = await check_backend(openai_double.base_url, models=["no-such-model"], timeout=5)
    assert findings[0].level is Level.OK and "serves" in findings[0].detail
    assert findings[1].level is Level.FAIL and "no-such-model" in findings[1].detail


async def test_bad_wallet_uri():
    [finding] = await check_wallet(f"bogus://user:{SECRET}@host?secret={SECRET}")
    assert finding.level is Level.FAIL and finding.step == "open"
    assert "bad wallet URI" in finding.detail and "unknown scheme bogus://" in finding.detail
    assert SECRET not in json.dumps(finding.to_dict())


async def test_missing_dev_ledger_is_not_created(tmp_path):
    ledger = tmp_path / "nope" / "ledger.sqlite"
    [finding] = await check_wallet(f"dev://{ledger}?account=alice")
    assert finding.level is Level.FAIL and "does not exist" in finding.detail
    assert not ledger.parent.exists()


async def test_wallet_not_configured_is_skipped():
    [finding] = await check_wallet(None)
    assert finding.level is Level.SKIP and "PYLON_WALLET" in finding.fix


async def test_unreachable_nwc_wallet(unused_tcp_port):
    """An NWC wallet whose relay is down: unreachable or timeout, never a crash."""
    uri = (f"nostr+walletconnect://{'b' * 64}?relay=ws%3A%2F%2F127.0.0.1%3A{unused_tcp_port}"
           f"&secret={SECRET}")
    [finding] = await check_wallet(uri, timeout=2)
    assert finding.level is Level.FAIL and finding.step == "balance"
    assert "no answer within" in finding.detail or "cannot reach" in finding.detail
    assert "running" in finding.fix or "start" in finding.fix
    assert SECRET not in json.dumps(finding.to_dict())
    assert f"127.0.0.1:{unused_tcp_port}" in finding.target  # the relay stays visible


async def test_healthy_setup_passes(relay_url, openai_double, dev_ledger):
    dev_ledger.fund("alice", 42_000)
    report = await run_doctor(relays=[relay_url], backend=openai_double.base_url,
                              wallet=dev_ledger.uri("alice"), timeout=5)
    assert report.ok, report.to_dict()
    wallet = next(f for f in report.findings if f.check == "wallet")
    assert wallet.level is Level.OK and "42000 msat" in wallet.detail


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


async def test_cli_healthy_exit_0_and_json(relay_url, openai_double, dev_ledger):
    # The CLI runs its own event loop: run it in a thread while this loop serves the relay.
    dev_ledger.fund("alice", 1_000)
    result = await asyncio.to_thread(invoke, ["doctor", "--relay", relay_url, "--backend", openai_double.base_url,
                                      "--wallet", dev_ledger.uri("alice"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert {f["check"] for f in data["findings"]} == {"config", "relay", "backend", "wallet"}


def test_cli_three_failures_three_messages(unused_tcp_port, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    dead = f"127.0.0.1:{unused_tcp_port}"
    result = CliRunner().invoke(app, ["doctor", "--relay", f"ws://{dead}", "--backend", f"http://{dead}/v1",
                                      "--wallet", f"bogus://{SECRET}", "--timeout", "2"])
    assert result.exit_code == 1
    out = result.output
    assert "✗ relay" in out and "cannot connect" in out
    assert "✗ backend" in out and "cannot reach the backend" in out
    assert "✗ wallet" in out and "bad wallet URI" in out
    assert "3 problems found" in out
    assert SECRET not in out


async def test_cli_invalid_config_still_checks_the_rest(pylon_home, relay_url, monkeypatch):
    (pylon_home / "config.toml").write_text("concurrency = -1\n")
    monkeypatch.setenv("COLUMNS", "400")
    result = await asyncio.to_thread(invoke, ["doctor", "--relay", relay_url, "--no-backend"])
    assert result.exit_code == 1
    assert "✗ config" in result.output and "concurrency" in result.output
    assert "✓ relay" in result.output


def test_doctor_runs_in_a_running_loop_free_thread():
    """run_doctor is a plain coroutine: usable from any event loop (e.g. a provider's)."""
    report = asyncio.run(run_doctor(relays=["ws://127.0.0.1:1"], backend="http://127.0.0.1:1/v1",
                                    timeout=1, check_backend_too=False))
    assert not report.ok


@pytest.mark.parametrize("auth", [False, True], ids=["open", "nip42-auth"])
async def test_round_trip_on_the_rust_nostr_reference_relay(auth):
    """A relay nobody here wrote (nostr-sdk LocalRelay): no NIP-11 (a warning, not a failure);
    with NIP-42 required for reads and writes, doctor authenticates and the round trip passes."""
    import nostr_sdk

    builder = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1")
    if auth:
        builder = builder.nip42(nostr_sdk.LocalRelayBuilderNip42(mode=nostr_sdk.LocalRelayBuilderNip42Mode.BOTH))
    relay = builder.build()
    await relay.run()
    try:
        url = str(await relay.url()).rstrip("/")
        findings = await check_relay(url, timeout=5)
    finally:
        relay.shutdown()
    assert by_step(findings, "connect").level is Level.OK
    rt = by_step(findings, "round trip")
    assert rt.level is Level.OK, rt
    assert ("after NIP-42 AUTH" in rt.detail) is auth
    assert by_step(findings, "nip11").level in (Level.OK, Level.WARN)
