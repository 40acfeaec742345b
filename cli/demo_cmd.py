"""`pylon demo`: one whole PAID job on this machine, nothing from the internet.

It starts the embedded relay, a development Lightning wallet (one SQLite ledger in a temp
folder: a "customer" account funded with 100 sat and a "provider" account), a vLLM server
on the CPU with the tiny model the set-up built (its weights are random, so its text is
noise), a provider in front of it that charges for jobs, and one ask that pays the
provider's invoice. It prints the answer, what was paid, the receipt and both balances
before and after, then stops everything. `--backend URL` uses a running OpenAI-compatible
server instead of starting vLLM: that is how a real model plugs in. `--free` runs the same
job unpaid.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from cli.common import console, err_console, handle_errors, print_json, run
from pylon.errors import BackendError
from pylon.nostr.keys import npub_of


FUNDING_MSAT = 100_000        # the customer's starting balance (100 sat)
PRICE_MSAT = 2_000            # per job
PRICE_PER_1K_TOKENS_MSAT = 1_000
MAX_MSAT = 10_000             # the customer's per-job cap (and bid)


async def _demo(prompt: str, backend_url: Optional[str], max_tokens: int, as_json: bool, free: bool = False) -> None:
    from nexus_relay import running_relay
    from pylon.provider.backends import OpenAIBackend
    from pylon.customer.client import PylonClient
    from pylon.customer.ledger import Ledger
    from pylon.nostr.keys import Keys
    from pylon.provider.provider import Provider
    from wallet.dev import DevWallet, fund

    say = (lambda text: None) if as_json else (lambda text: err_console.print(text, highlight=False))
    if backend_url is not None:
        await _check_backend(backend_url)  # a dead --backend: one line now, nothing started
    vllm = None
    balances: dict[str, dict[str, int]] = {}
    receipt = None
    with tempfile.TemporaryDirectory(prefix="pylon-demo-") as tmp:
        ledger_path = Path(tmp) / "devwallet.sqlite"
        fund(ledger_path, "customer", FUNDING_MSAT)
        customer_wallet, provider_wallet = DevWallet(ledger_path, "customer"), DevWallet(ledger_path, "provider")
        receipts = Ledger(Path(tmp) / "receipts.sqlite")
        try:
            balances["before"] = {"customer": await customer_wallet.balance(),
                                  "provider": await provider_wallet.balance()}
            say(f"[green]✓[/] dev wallet {ledger_path.name}: customer {balances['before']['customer']} msat, "
                f"provider {balances['before']['provider']} msat")
            async with running_relay(Path(tmp) / "relay.sqlite") as relay:
                say(f"[green]✓[/] relay on {relay.url}")
                if backend_url is None:
                    from pylon.devstack.vllm import missing_reason, start_vllm

                    reason = missing_reason()
                    if reason:
                        raise BackendError(f"cannot start the local vLLM: {reason}; "
                                           "or pass --backend URL of a running OpenAI-compatible server")
                    say("starting vLLM on the CPU with the tiny local model (20-40 s)…")
                    t0 = time.monotonic()
                    vllm = await asyncio.to_thread(start_vllm)
                    backend_url = vllm.base_url
                    say(f"[green]✓[/] vLLM ready in {time.monotonic() - t0:.0f}s at {backend_url}")
                backend = OpenAIBackend(backend_url)
                try:
                    provider = Provider([relay.url], backend, keys=Keys.generate(),
                                        db_path=Path(tmp) / "provider.sqlite", free=free,
                                        price_msat=PRICE_MSAT, price_per_1k_tokens_msat=PRICE_PER_1K_TOKENS_MSAT,
                                        wallet=provider_wallet)
                    async with provider.running():
                        pricing = "free" if free else (f"{PRICE_MSAT} msat per job + {PRICE_PER_1K_TOKENS_MSAT} "
                                                        "msat per 1k max_tokens")
                        say(f"[green]✓[/] provider {provider.keys.npub[:20]}… serving "
                            f"{', '.join(provider.served_models)} ({pricing})")
                        async with PylonClient([relay.url], keys=Keys.generate(), wallet=customer_wallet,
                                               max_msat=MAX_MSAT, ledger=receipts) as client:
                            outcome = await client.ask(prompt, max_tokens=max_tokens, timeout=120,
                                                       on_progress=_progress(say, free))
                finally:
                    await backend.aclose()
            balances["after"] = {"customer": await customer_wallet.balance(),
                                 "provider": await provider_wallet.balance()}
            receipt = outcome.receipt
        finally:
            if vllm is not None:
                await asyncio.to_thread(vllm.stop)
            receipts.close()
            await customer_wallet.aclose()
            await provider_wallet.aclose()
    change = {k: balances["after"][k] - balances["before"][k] for k in balances["after"]}
    if as_json:
        print_json({**outcome.model_dump(), "random_weights": vllm is not None, "balances_msat": balances,
                    "balance_change_msat": change})
        return
    console.print(f"\n[bold]prompt:[/] {prompt}")
    console.print(f"[bold]answer:[/] {outcome.text}", highlight=False)
    console.print(f"[dim]{outcome.usage.prompt_tokens}+{outcome.usage.completion_tokens} tokens, "
                  f"{outcome.timings.get('result', 0):.2f}s through the relay[/]")
    if free and not outcome.paid_msat:
        console.print(f"[bold]free:[/] answered by provider {npub_of(outcome.provider)}", highlight=False)
    else:
        console.print(f"[bold]paid:[/] {outcome.paid_msat} msat (+{outcome.fee_msat} msat fee) to provider "
                      f"{npub_of(outcome.provider)}", highlight=False)
    if receipt is not None:
        console.print(f"[bold]receipt:[/] #{receipt['id']} {receipt['status']} · {receipt['amount_msat']} msat · "
                      f"payment hash {receipt['payment_hash'][:24]}… · preimage {str(receipt['preimage'])[:24]}…",
                      highlight=False)
    console.print(f"[bold]balances:[/] customer {balances['before']['customer']} → {balances['after']['customer']} "
                  f"msat ({change['customer']:+d}), provider {balances['before']['provider']} → "
                  f"{balances['after']['provider']} msat ({change['provider']:+d})", highlight=False)
    # what follows is status, not the demo's result: stderr (stdout carries data only, docs/CLI.md)
    if vllm is not None:
        err_console.print("\n[yellow]Note:[/] the demo model's weights are random, so its text is noise. "
                      "Any real model plugs in with `pylon serve --backend http://HOST:PORT/v1` "
                      "(vLLM, llama.cpp, Ollama, SGLang), or `pylon demo --backend URL`.")
    err_console.print("[green]✓[/] relay, " + ("vLLM, " if vllm is not None else "")
                      + "provider and dev wallet stopped.", highlight=False)


async def _check_backend(url: str) -> None:
    """BackendError (exit 6) unless the OpenAI-compatible server at `url` answers GET /models."""
    from pylon.provider.backends import OpenAIBackend

    backend = OpenAIBackend(url)
    try:
        health = await backend.health()
    finally:
        await backend.aclose()
    if not health.ok:
        raise BackendError(health.error or f"backend at {url} is not answering",
                           hint="start the server first (GET URL/models must answer), or leave out --backend "
                                "to use the local vLLM")


def _progress(say: Callable[[str], None], free: bool = False) -> Callable[[Any], None]:
    """Show the quote and the payment as they happen. Pay-first: quote, payment, processing.
    Pay for the key: processing first, then the sealed result's quote and the payment."""
    seen: set[str] = set()

    def show(p: Any) -> None:
        if p.stage == "quoted":
            say(f"[green]✓[/] quote: {p.amount_msat} msat (payment-required with a bolt11 invoice)")
        elif p.stage == "payment":
            say(f"[green]✓[/] {p.detail}")
        elif p.stage == "processing" and "processing" not in seen:
            if "quoted" in seen:
                say("[green]✓[/] provider saw the payment settle; processing")
            elif free:
                say("[green]✓[/] provider is processing (free: nothing to pay)")
            else:
                say("[green]✓[/] provider is processing (the answer comes sealed; you pay for its key)")
        seen.add(p.stage)
    return show


@handle_errors
def demo(
    prompt: str = typer.Argument("What is the capital of France?", help="The prompt to ask."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Use this OpenAI-compatible server "
                                          "instead of starting the local vLLM."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1, help="Most tokens to generate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    free: bool = typer.Option(False, "--free", help="Run the job unpaid."),
) -> None:
    """Run one whole paid job locally: relay, dev wallet, vLLM (tiny model), provider, ask; then stop."""
    import logging

    logging.getLogger("pylon").setLevel(logging.WARNING)
    run(_demo(prompt, backend, max_tokens, as_json, free))
