"""Pylon against nostrdvm (PyPI nostr-dvm 1.1.8), DVM software nobody here wrote.

Both directions on the real embedded relay, with real processes:
  - `pylon ask` -> nostrdvm's own kind-5050 TextGenerationLLMLite DVM (litellm -> the OpenAI
    double): untargeted, targeted in clear, targeted encrypted; nostrdvm's feedback (encrypted
    ones carry status inside the content as a tag array) parsed by pylon.jobs.nip90;
  - a nostrdvm-style customer (nostr-sdk EventBuilder requests, replies read by nostrdvm's bot
    rules: tests/peers/nostrdvm_client.py) -> `pylon serve`: the same three modes;
  - discovery: `pylon providers` reads nostrdvm's NIP-89 announcement.
Skipped when tests/peers/setup_nostrdvm.sh has not built .peers/nostrdvm-venv.
Deviations found are recorded in docs/PROTOCOL.md "Interop with nostrdvm".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pylon.jobs.nip90 import JobFeedback, JobResult
from pylon.nostr.keys import Keys
from tests.e2e.helpers import serving, stored
from tests.faults.harness import PYLON, cli_env
from tests.peers import nostrdvm_peer

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not nostrdvm_peer.is_built(),
                                 reason="nostrdvm test peer not built: run tests/peers/setup_nostrdvm.sh")]


async def _ask(relay_url: str, home: Path, *args: str) -> dict:
    proc = await asyncio.create_subprocess_exec(
        PYLON, "ask", "--relay", relay_url, "--json", "--timeout", "60", *args, env=cli_env(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


@pytest.fixture
async def nostrdvm(relay_url, openai_double):
    dvm = await asyncio.to_thread(nostrdvm_peer.NostrDVM.start, relay_url, base_url=openai_double.base_url,
                                  model=openai_double.model)
    try:
        yield dvm
    finally:
        await asyncio.to_thread(dvm.stop)


async def test_pylon_ask_gets_answers_from_nostrdvm(relay_url, nostrdvm, tmp_path):
    home = tmp_path / "customer"
    home.mkdir()
    keys = Keys.generate()
    keys.save(home / "identity.key")
    expected = "This is the OpenAI double answering the prompt: {}"
    modes = {
        "untargeted": [],
        "targeted in clear": ["--provider", nostrdvm.pubkey, "--no-encrypt"],
        "targeted encrypted": ["--provider", nostrdvm.pubkey],
    }
    for mode, extra in modes.items():
        prompt = f"hello nostrdvm, {mode}"
        data = await _ask(relay_url, home, prompt, *extra)
        # nostrdvm's post-processing keeps plain text as it is
        assert data["text"] == expected.format(prompt), (mode, data)
        assert data["provider"] == nostrdvm.pubkey
        assert data["encrypted"] is (mode == "targeted encrypted")
        # its result and its feedback, clear or sealed, are understood by Pylon's parser
        request_id = data["job_id"]
        [result_event] = await stored(relay_url, kinds=[6050], authors=[nostrdvm.pubkey], e=[request_id])
        assert JobResult.from_event(result_event, keys).text == expected.format(prompt)
        mine = [JobFeedback.from_event(ev, keys)
                for ev in await stored(relay_url, kinds=[7000], authors=[nostrdvm.pubkey], e=[request_id])]
        assert [f.status for f in mine] == ["processing"], (mode, mine)
        assert mine[0].encrypted is (mode == "targeted encrypted")
        if mode == "targeted encrypted":  # nostrdvm seals the status inside the content
            assert mine[0].event is not None and mine[0].event.first_tag("status") is None


async def test_pylon_providers_reads_nostrdvm_announcement(relay_url, nostrdvm, tmp_path):
    proc = await asyncio.create_subprocess_exec(
        PYLON, "providers", "--relay", relay_url, "--json", env=cli_env(tmp_path / "h"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    raw, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    out = raw.decode()
    found = [p for p in json.loads(out) if p.get("pubkey") == nostrdvm.pubkey]
    assert found, out[:2000]
    entry = found[0]
    assert entry["name"] == "nostrdvm LLM"
    assert entry["encryption"] == ["nip44", "nip04"]  # from "supportsEncryption": true
    assert entry["models"] == ["double-model"]  # from nip90Params.model.values
    assert entry["params"] == {"model": {"required": False, "values": ["double-model"]}}


async def test_nostrdvm_client_gets_answers_from_pylon_serve(relay_url, openai_double, tmp_path):
    keys = Keys.generate()
    openai_double.latency_s = 0.4  # longer than the provider's PROCESSING_NOTICE_S: it says `processing`
    async with serving(relay_url, openai_double.base_url, tmp_path / "jobs.sqlite", keys=keys):
        for mode, kwargs in {"untargeted": {}, "targeted in clear": {"provider": keys.public_key},
                             "targeted encrypted": {"provider": keys.public_key, "encrypt": True}}.items():
            prompt = f"hello pylon, {mode}"
            out = await asyncio.to_thread(nostrdvm_peer.run_client, relay_url, prompt=prompt, timeout=60, **kwargs)
            assert out["errors"] == [], (mode, out)
            # nostrdvm's bot reads our result and our feedback, encrypted ones included
            assert out["result"] == f"This is the OpenAI double answering the prompt: {prompt}", (mode, out)
            assert [f["status"] for f in out["feedback"]][:1] == ["processing"], (mode, out)


async def test_pylon_pays_a_priced_nostrdvm_dvm_through_lnbits(relay_url, openai_double, lnbits, tmp_path):
    """nostrdvm with its LNbits config (bob's keys) asks 5 sat in payment-required feedback with a
    bolt11; `pylon ask` checks and pays it from alice's LNbits wallet; nostrdvm sees the invoice
    paid (it polls LNbits) and delivers."""
    dvm = await asyncio.to_thread(
        nostrdvm_peer.NostrDVM.start, relay_url, base_url=openai_double.base_url, model=openai_double.model,
        fix_cost_sat=5, lnbits_url=lnbits.base_url, lnbits_invoice_key=lnbits.bob["inkey"],
        lnbits_admin_key=lnbits.bob["adminkey"])
    try:
        home = tmp_path / "customer"
        home.mkdir()
        for extra in (["--no-encrypt"], []):
            prompt = f"paid hello {len(extra)}"
            data = await _ask(relay_url, home, prompt, "--provider", dvm.pubkey, "--wallet",
                              lnbits.uri(lnbits.alice), "--max-msat", "6000", *extra)
            assert data["text"] == f"This is the OpenAI double answering the prompt: {prompt}", data
            assert data["paid_msat"] == 5_000, data
    finally:
        await asyncio.to_thread(dvm.stop)


async def test_nostrdvm_client_pays_a_priced_pylon_provider_through_lnbits(relay_url, openai_double, lnbits,
                                                                          tmp_path):
    """A priced Pylon provider (bob's LNbits wallet) asks 3 sat; the nostrdvm-style customer reads
    the bolt11 by its bot's rules and pays it with nostrdvm's pay_bolt11_ln_bits from alice's."""
    from wallet import open_wallet

    keys = Keys.generate()
    provider_wallet = open_wallet(lnbits.uri(lnbits.bob))
    try:
        async with serving(relay_url, openai_double.base_url, tmp_path / "jobs.sqlite", keys=keys,
                           wallet=provider_wallet, price_msat=3_000):
            for encrypt in (False, True):
                prompt = f"paid pylon {encrypt}"
                out = await asyncio.to_thread(
                    nostrdvm_peer.run_client, relay_url, prompt=prompt, provider=keys.public_key, encrypt=encrypt,
                    bid_msat=3_000, pay_with_lnbits=f"{lnbits.base_url}|{lnbits.alice['adminkey']}", timeout=60)
                assert out["errors"] == [] and out["paid"] is True, out
                quote = next(f for f in out["feedback"] if f["status"] == "payment-required")
                assert quote["amount_msat"] == 3_000 and quote["bolt11"], out
                assert out["result"] == f"This is the OpenAI double answering the prompt: {prompt}", out
    finally:
        await provider_wallet.aclose()


async def test_pylon_ask_to_nostrdvm_on_the_real_cpu_vllm(relay_url, vllm_server, tmp_path):
    """The same path with nostrdvm's litellm calling the real vLLM (tiny random Llama): an
    encrypted targeted ask gets its generated text back through nostrdvm."""
    dvm = await asyncio.to_thread(nostrdvm_peer.NostrDVM.start, relay_url, base_url=vllm_server.base_url,
                                  model=vllm_server.model)
    try:
        home = tmp_path / "customer"
        home.mkdir()
        data = await _ask(relay_url, home, "count to three", "--provider", dvm.pubkey)
        assert data["provider"] == dvm.pubkey and data["encrypted"] is True
        assert data["text"].strip(), data  # random weights: some text, whatever it says
    finally:
        await asyncio.to_thread(dvm.stop)
