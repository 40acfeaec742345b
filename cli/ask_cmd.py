"""`pylon ask "PROMPT"`: run one NIP-90 job and print the answer.

Output follows where it goes: on a terminal the job's progress is shown on stderr (published,
quoted, processing, partial text, done); when piped only the answer reaches stdout; `--json`
prints one JSON object (answer, job id, provider, usage, msats, quotes, receipt, timings).
Errors are one red line and a non-zero exit code (cli.common.handle_errors).

Paying: `--wallet URI` (or PYLON_WALLET) pays a provider's `payment-required` invoice after
checking it (pylon.customer.payments); `--max-msat` caps what one job may cost and
`--bid-msat` is the bid tag sent with the request (default: the cap). Every payment leaves a
receipt in PYLON_HOME's ledger (`pylon receipts`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from cli.common import err_console, handle_errors, print_json, run, setup_logging
from cli.common import pubkey_option
from pylon.ops.config import load_settings
from pylon.ops.secrets import wallet_from_flags


def _short(pubkey: str | None) -> str:
    return f"{pubkey[:10]}…" if pubkey else "?"


class _Progress:
    """Renders JobProgress on stderr (terminal only) and streamed text on stdout."""

    def __init__(self, *, show: bool, stream: bool) -> None:
        self.show = show
        self.stream = stream
        self.chars = 0
        self.status: Any = None
        self.streamed_any = False

    def start(self) -> None:
        if self.show and not self.stream:
            self.status = err_console.status("publishing the job…")
            self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def say(self, text: str) -> None:
        if not self.show:
            return
        if self.status is not None:
            self.status.update(text)
        elif not self.stream:
            err_console.print(text, highlight=False)

    def line(self, text: str) -> None:
        if self.show:
            if self.status is not None:
                self.status.console.print(text, highlight=False)
            elif not self.stream:
                err_console.print(text, highlight=False)

    def __call__(self, p: Any) -> None:  # JobProgress
        if p.stage == "published":
            self.line(f"[dim]→ {p.detail}[/]")
            self.say("waiting for a provider…")
        elif p.stage == "quoted":
            self.line(f"[dim]→ quote from {_short(p.provider)}: {p.amount_msat or 0} msat[/]")
        elif p.stage == "payment":
            self.line(f"[dim]→ {p.detail or f'paid {p.amount_msat or 0} msat'}[/]")
        elif p.stage == "processing":
            self.say(f"processing by {_short(p.provider)}…")
        elif p.stage == "partial":
            self.chars += len(p.text or "")
            self.say(f"receiving from {_short(p.provider)}… {self.chars} chars")
        elif p.stage == "error":
            self.line(f"[yellow]→ {_short(p.provider)}: {p.detail}[/]")
        elif p.stage == "done":
            self.say("done")

    def delta(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.streamed_any = True


async def _ask(prompt: str, settings: Any, *, system: str | None, model: str | None, max_tokens: int | None,
               temperature: float | None, provider: str | None, timeout: float, stream: bool,
               as_json: bool, encrypted: bool | None, bid_msat: int | None = None) -> None:
    from pylon.customer.client import PylonClient

    messages: str | list[dict] = prompt
    if system:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    wallet = None
    if settings.wallet:
        from wallet import open_wallet

        wallet = open_wallet(settings.wallet)  # PylonClient.start connects it (NWC: network) and recovers receipts
    show = err_console.is_terminal and not as_json
    progress = _Progress(show=show, stream=stream and not as_json)
    kwargs: dict[str, Any] = dict(model=model, max_tokens=max_tokens, temperature=temperature, provider=provider,
                                  timeout=timeout, encrypted=encrypted, on_progress=progress, bid_msat=bid_msat)
    try:
        async with PylonClient(settings.relays, wallet=wallet, max_msat=settings.max_msat,
                               daily_budget_msat=settings.daily_budget_msat) as client:
            progress.start()
            if progress.stream:
                job = client.stream(messages, **kwargs)
                async for piece in job:
                    progress.delta(piece)
                outcome = job.outcome
            else:
                outcome = await client.ask(messages, **kwargs)
    finally:
        progress.stop()
        if wallet is not None:
            await wallet.aclose()
    assert outcome is not None
    if as_json:
        print_json(outcome.model_dump())
        return
    if not show and (outcome.paid_msat or outcome.receipt is not None):
        # piped: stdout stays the answer alone, but what was paid is always said (stderr)
        err_console.print(f"pylon: paid {outcome.paid_msat} msat (+{outcome.fee_msat} fee) to provider "
                          f"{outcome.provider} for job {outcome.job_id}", highlight=False, soft_wrap=True)
    if progress.stream:
        sys.stdout.write("\n" if progress.streamed_any else outcome.text + "\n")
    else:
        sys.stdout.write(outcome.text + "\n")
    sys.stdout.flush()
    if show:
        usage = outcome.usage
        took = outcome.timings.get("result")
        err_console.print(
            f"[dim]✓ {_short(outcome.provider)} · {outcome.model or '?'} · "
            f"{usage.prompt_tokens if usage.prompt_tokens is not None else '?'}+"
            f"{usage.completion_tokens if usage.completion_tokens is not None else '?'} tokens · "
            f"{outcome.paid_msat} msat · {took:.2f}s[/]" if took is not None else "[dim]✓ done[/]",
            highlight=False)
        if outcome.receipt is not None:
            r = outcome.receipt
            err_console.print(f"[dim]receipt {r['id']}: {r['amount_msat']} msat + {r['fee_msat']} fee, "
                              f"hash {r['payment_hash'][:16]}…, {r['status']}[/]", highlight=False)


@handle_errors
def ask(
    prompt: str = typer.Argument(..., help="The prompt; '-' reads it from stdin."),
    relay: Optional[list[str]] = typer.Option(None, "--relay", "-r", help="Relay URL (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to ask for (default: the provider's)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Most tokens to generate."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="Sampling temperature."),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", help="Only this provider (npub or hex); "
                                           "the job is then encrypted to it."),
    system: Optional[str] = typer.Option(None, "--system", help="A system message before the prompt."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1, help="Seconds to wait for the answer."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it arrives."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plain: bool = typer.Option(False, "--no-encrypt", help="Send a targeted job unencrypted."),
    wallet: Optional[str] = typer.Option(None, "--wallet", help="Wallet URI to pay with (or PYLON_WALLET)."),
    wallet_file: Optional[Path] = typer.Option(None, "--wallet-file", metavar="PATH",
                                               help="File holding the wallet URI (keeps it out of ps)."),
    max_msat: Optional[int] = typer.Option(None, "--max-msat", min=0, help="Most msat to pay for this job."),
    bid_msat: Optional[int] = typer.Option(None, "--bid-msat", min=0, help="Bid tag sent with the job "
                                           "(default: --max-msat); a quote above it is refused."),
    daily_budget_msat: Optional[int] = typer.Option(None, "--daily-budget-msat", min=0,
                                                    help="Most msat to spend per UTC day (all asks)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Ask the swarm: publish a kind-5050 job and print the answer."""
    if verbose:
        setup_logging(True)
    if prompt == "-":
        prompt = sys.stdin.read()
    provider = pubkey_option("--provider", provider)  # a typo'd npub or an nsec: one line, nothing sent
    settings = load_settings({"relays": relay, "wallet": wallet_from_flags(wallet, wallet_file), "max_msat": max_msat, "timeout_s": timeout,
                              "daily_budget_msat": daily_budget_msat})
    run(_ask(prompt, settings, system=system, model=model, max_tokens=max_tokens, temperature=temperature,
             provider=provider, timeout=settings.timeout_s, stream=stream, as_json=as_json,
             encrypted=False if plain else None, bid_msat=bid_msat))
