"""`pylon wallet …` and `pylon receipts` through typer's CliRunner, and serve-nwc as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from pylon.customer.ledger import Ledger
from wallet import InvoiceState, open_wallet

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def test_fund_balance_invoice_pay(dev_ledger):
    alice, bob = dev_ledger.uri("alice"), dev_ledger.uri("bob")
    r = invoke("wallet", "fund", "40000", "--wallet", alice, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["balance_msat"] == 40_000
    r = invoke("wallet", "invoice", "15000", "--memo", "cli", "--wallet", bob, "--json")
    assert r.exit_code == 0
    inv = json.loads(r.stdout)
    assert inv["bolt11"].startswith("lnbcrt") and inv["amount_msat"] == 15_000
    r = invoke("wallet", "pay", inv["bolt11"], "--max-msat", "14999", "--wallet", alice)
    assert r.exit_code == 5 and "above the allowed" in r.stderr
    r = invoke("wallet", "pay", inv["bolt11"], "--wallet", alice, "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["preimage"]) == 64
    r = invoke("wallet", "balance", "--json", env={"PYLON_WALLET": alice})   # from the environment
    assert json.loads(r.stdout)["balance_msat"] == 25_000
    r = invoke("wallet", "balance", "--wallet", bob)
    assert r.exit_code == 0 and "15000 msat" in r.stdout


def test_errors_are_one_line_and_hide_secrets(dev_ledger):
    r = invoke("wallet", "fund", "5", "--wallet", "lnbits://SECRETKEY@127.0.0.1:9")
    assert r.exit_code == 2 and "only works with dev://" in r.stderr and "SECRETKEY" not in r.output
    r = invoke("wallet", "balance", "--wallet", "lnbits://SECRETKEY@127.0.0.1:9")
    assert r.exit_code == 5 and "SECRETKEY" not in r.output and "Traceback" not in r.output
    r = invoke("wallet", "balance")
    assert r.exit_code == 2 and "no wallet configured" in r.stderr
    r = invoke("wallet", "pay", "lnbcrt1garbage", "--wallet", dev_ledger.uri("a"))
    assert r.exit_code == 5 and "not a valid BOLT11" in r.stderr


def test_receipts_table_and_json():
    with Ledger() as led:   # PYLON_HOME/ledger.sqlite, as the client writes it
        led.record_intent(job_id="job-a", provider="prov1" * 4, payment_hash="aa" * 32, amount_msat=1_000, bolt11="x")
        led.mark_paid("aa" * 32, preimage="bb" * 32, fee_msat=2)
        led.record_intent(job_id="job-b", provider="prov2" * 4, payment_hash="cc" * 32, amount_msat=500, bolt11="y")
    r = invoke("receipts", "--json")
    data = json.loads(r.stdout)
    assert r.exit_code == 0 and data["total_msat"] == 1_002 and data["pending_msat"] == 500  # paid only
    assert {x["job_id"] for x in data["receipts"]} == {"job-a", "job-b"}
    assert data["totals_by_provider"]["prov1" * 4] == {"count": 1, "amount_msat": 1_000, "fee_msat": 2}
    r = invoke("receipts")
    assert r.exit_code == 0 and "Totals per provider" in r.stdout and "total paid: 1002 msat" in r.stdout
    assert "500 msat pending" in r.stdout


@pytest.mark.embedded_relay
async def test_serve_nwc_prints_a_uri_that_works_and_stops_on_ctrl_c(relay_url, dev_ledger, pylon_home):
    dev_ledger.fund("svc", 9_000)
    shop = dev_ledger.wallet("shop")
    env = dict(os.environ, PYLON_HOME=str(pylon_home))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "wallet", "serve-nwc", "--wallet", dev_ledger.uri("svc"),
        "--relay", relay_url, "--budget-msat", "5000", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert line.startswith("nostr+walletconnect://"), (line, await proc.stderr.read(2000))
        client = open_wallet(line)
        try:
            assert await client.connect() and client.network == "regtest"
            assert await client.balance() == 9_000
            inv = await shop.make_invoice(4_000)
            await client.pay_invoice(inv.bolt11, max_msat=4_000)
            assert await shop.lookup_invoice(inv.payment_hash) == InvoiceState.SETTLED
            from wallet import QuotaExceeded

            with pytest.raises(QuotaExceeded):
                await client.pay_invoice((await shop.make_invoice(2_000)).bolt11, max_msat=2_000)
        finally:
            await client.aclose()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 130
        err = (await proc.stderr.read()).decode()
        assert "Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _invoice_and_wait(uri: str, pylon_home: Path, *extra: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYLON_HOME=str(pylon_home), PYLON_WALLET=uri)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "wallet", "invoice", "3000", "--memo", "tip", "--wait", "--json", *extra,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _json_objects(proc: asyncio.subprocess.Process) -> list[dict]:
    """The (indented) JSON objects `--json` printed, one after another."""
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    decoder, text, objs = json.JSONDecoder(), out.decode(), []
    pos = 0
    while text[pos:].strip():
        obj, end = decoder.raw_decode(text[pos:].lstrip())
        pos = len(text) - len(text[pos:].lstrip()) + end
        objs.append(obj)
    return objs


async def _first_object(proc: asyncio.subprocess.Process) -> dict:
    """The invoice object, printed before the wait (read line by line up to its closing brace)."""
    assert proc.stdout is not None
    text = ""
    while not text.rstrip().endswith("}"):
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the command ended before printing the invoice"
        text += line.decode()
    return json.loads(text)


@pytest.mark.embedded_relay
async def test_invoice_wait_over_nwc_ends_when_paid(relay_url, dev_ledger, pylon_home):
    """`pylon wallet invoice --wait` against an NWC wallet: woken by payment_received, exit 0."""
    from wallet.nwc_service import NwcService

    dev_ledger.fund("payer", 10_000)
    service = NwcService(dev_ledger.wallet("shop"), [relay_url])
    async with service.running():
        proc = await _invoice_and_wait(service.uri_for(service.new_connection(name="cli")), pylon_home)
        inv = await _first_object(proc)
        assert inv["amount_msat"] == 3_000
        await dev_ledger.wallet("payer").pay_invoice(inv["bolt11"], max_msat=3_000)
        (done,) = await _json_objects(proc)
        assert proc.returncode == 0 and done == {"payment_hash": inv["payment_hash"], "state": "settled"}
        assert service.stats["by_method"].get("lookup_invoice", 0) == 0  # the notification, not polling


async def test_invoice_wait_on_an_expired_invoice_is_one_line_and_exit_1(dev_ledger, pylon_home):
    proc = await _invoice_and_wait(dev_ledger.uri("shop"), pylon_home, "--expiry", "1")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert out.decode().rstrip().endswith('"state": "expired"\n}')
    assert "not paid: expired" in err.decode() and "Traceback" not in err.decode()
