"""`pylon demo`: one whole free job on this machine, nothing from the internet.

It starts the embedded relay, a vLLM server on the CPU with the tiny model the set-up built
(its weights are random, so its text is noise), a provider in front of it, and one ask;
prints the answer and the figures, then stops everything. `--backend URL` uses a running
OpenAI-compatible server instead of starting vLLM: that is how a real model plugs in.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from cli.common import console, err_console, handle_errors, print_json, run
from pylon.errors import BackendError


async def _demo(prompt: str, backend_url: Optional[str], max_tokens: int, as_json: bool) -> None:
    from nexus_relay import running_relay
    from pylon.backends import OpenAIBackend
    from pylon.client import PylonClient
    from pylon.nostr.keys import Keys
    from pylon.provider import Provider

    say = (lambda text: None) if as_json else (lambda text: err_console.print(text, highlight=False))
    vllm = None
    with tempfile.TemporaryDirectory(prefix="pylon-demo-") as tmp:
        try:
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
                                        db_path=Path(tmp) / "provider.sqlite")
                    async with provider.running():
                        say(f"[green]✓[/] provider {provider.keys.npub[:20]}… serving "
                            f"{', '.join(provider.served_models)}")
                        async with PylonClient([relay.url], keys=Keys.generate()) as client:
                            outcome = await client.ask(prompt, max_tokens=max_tokens, timeout=120)
                finally:
                    await backend.aclose()
        finally:
            if vllm is not None:
                await asyncio.to_thread(vllm.stop)
    if as_json:
        print_json({**outcome.model_dump(), "random_weights": vllm is not None})
        return
    console.print(f"\n[bold]prompt:[/] {prompt}")
    console.print(f"[bold]answer:[/] {outcome.text}", highlight=False)
    console.print(f"[dim]{outcome.usage.prompt_tokens}+{outcome.usage.completion_tokens} tokens, "
                  f"{outcome.paid_msat} msat, {outcome.timings.get('result', 0):.2f}s through the relay[/]")
    if vllm is not None:
        console.print("\n[yellow]Note:[/] the demo model's weights are random, so its text is noise. "
                      "Any real model plugs in with `pylon serve --backend http://HOST:PORT/v1` "
                      "(vLLM, llama.cpp, Ollama, SGLang), or `pylon demo --backend URL`.")
    console.print("[green]✓[/] relay, vLLM and provider stopped.")


@handle_errors
def demo(
    prompt: str = typer.Argument("What is the capital of France?", help="The prompt to ask."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Use this OpenAI-compatible server "
                                          "instead of starting the local vLLM."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1, help="Most tokens to generate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run one whole job locally: relay, vLLM (tiny model), provider, ask; then stop everything."""
    import logging

    logging.getLogger("pylon").setLevel(logging.WARNING)
    run(_demo(prompt, backend, max_tokens, as_json))
