"""`pylon ask "PROMPT"`: run one NIP-90 job and print the answer.

The prompt is the argument, piped stdin, or both (`cat notes | pylon ask "summarise this"`:
stdin first, then the argument); `-s/--system` adds a system message and `--template NAME`
applies a saved template (cli.prompts). Every parameter is checked against its documented
range before anything is sent (pylon.jobs.params).

Output follows where it goes: on a terminal the job's progress is shown on stderr (one line
per event, and a status line with the elapsed time and the deadline; `--quiet` hides it);
when piped only the answer reaches stdout; `--json` prints one JSON object (answer, job id,
provider, usage, msats, quotes, receipt, timings). Errors are one red line and a non-zero
exit code (cli.common.handle_errors). Every ask, answered or not, is recorded in
`pylon history` (text only with `history.save_text`).

Paying: `--wallet URI` (or PYLON_WALLET) pays a provider's `payment-required` invoice after
checking it (pylon.customer.payments); `--max-msat` caps what one job may cost and
`--bid-msat` is the bid tag sent with the request (default: the cap). Every payment leaves a
receipt in PYLON_HOME's ledger (`pylon receipts`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from cli.common import err_console, handle_errors, print_json, run, setup_logging
from cli.common import WalletFileOpt, check_wallet_uri, pubkey_option
from cli.defaults import effective
from cli.progress import JobProgressView, short
from cli.prompts import build_messages, load_template, read_prompt
from pylon.errors import ConfigError, PylonError
from pylon.jobs.params import check_params
from pylon.nostr.keys import npub_of
from cli.defaults import load_settings
from pylon.ops.secrets import wallet_from_flags


async def _ask(prompt: str, settings: Any, *, system: str | None, model: str | None, max_tokens: int | None,
               temperature: float | None, provider: str | None, timeout: float, stream: bool,
               as_json: bool, encrypted: bool | None, bid_msat: int | None = None, quiet: bool = False,
               failover: bool | None = None) -> None:
    """One ask; untargeted jobs decide among offers by settings.route / avoid / decision_window_ms."""
    from pylon.customer.client import PylonClient

    messages = build_messages(prompt, system)
    wallet = None
    if settings.wallet:
        from wallet import open_wallet

        wallet = open_wallet(settings.wallet)  # PylonClient.start connects it (NWC: network) and recovers receipts
    show = err_console.is_terminal and not as_json and not quiet
    progress = JobProgressView(show=show, stream=stream and not as_json, timeout=timeout)
    kwargs: dict[str, Any] = dict(model=model, max_tokens=max_tokens, temperature=temperature, provider=provider,
                                  timeout=timeout, encrypted=encrypted, on_progress=progress, bid_msat=bid_msat,
                                  failover=failover)
    started, t0 = time.time(), time.monotonic()
    outcome = None
    try:
        async with PylonClient(settings.relays, wallet=wallet, max_msat=settings.max_msat,
                               daily_budget_msat=settings.daily_budget_msat, route=settings.route,
                               avoid=settings.avoid, decision_window_s=settings.decision_window_ms / 1000,
                               publish_reviews=settings.publish_reviews,
                               key_delivery=settings.key_delivery) as client:
            progress.start()
            if progress.stream:
                async with client.stream(messages, **kwargs) as job:  # Ctrl-C: the job is cancelled, not orphaned
                    async for piece in job:
                        progress.delta(piece)
                outcome = job.outcome
            else:
                outcome = await client.ask(messages, **kwargs)
    except PylonError as exc:
        _record(settings, started, time.monotonic() - t0, prompt, system, model, None, error=exc,
                provider=progress.last_provider)
        raise
    finally:
        progress.stop()
        if wallet is not None:
            await wallet.aclose()
    assert outcome is not None
    _record(settings, started, time.monotonic() - t0, prompt, system, model, outcome)
    if as_json:
        print_json(outcome.model_dump())
        return
    if not show and (outcome.paid_msat or outcome.receipt is not None):
        # piped: stdout stays the answer alone, but what was paid is always said (stderr)
        err_console.print(f"pylon: paid {outcome.paid_msat} msat (+{outcome.fee_msat} fee) to provider "
                          f"{npub_of(outcome.provider)} for job {outcome.job_id}", highlight=False, soft_wrap=True)
    if progress.stream:
        sys.stdout.write("\n" if progress.streamed_any else outcome.text + "\n")
    else:
        sys.stdout.write(outcome.text + "\n")
    sys.stdout.flush()
    if show:
        usage = outcome.usage
        took = outcome.timings.get("result")
        err_console.print(
            f"[dim]✓ {short(outcome.provider)} · {outcome.model or '?'} · "
            f"{usage.prompt_tokens if usage.prompt_tokens is not None else '?'}+"
            f"{usage.completion_tokens if usage.completion_tokens is not None else '?'} tokens · "
            f"{outcome.paid_msat} msat · {took:.2f}s[/]" if took is not None else "[dim]✓ done[/]",
            highlight=False)
        if outcome.receipt is not None:
            r = outcome.receipt
            err_console.print(f"[dim]receipt {r['id']}: {r['amount_msat']} msat + {r['fee_msat']} fee, "
                              f"hash {r['payment_hash'][:16]}…, {r['status']}[/]", highlight=False)


def _record(settings: Any, started: float, latency: float, prompt: str, system: str | None, model: str | None,
            outcome: Any, *, error: Exception | None = None, provider: str | None = None) -> None:
    """One row in `pylon history`; a history that cannot be written is a warning, not a failure."""
    from pylon.customer.history import History, HistoryEntry
    from pylon.home import db_path

    if outcome is not None:
        entry = HistoryEntry(
            at=started, status="ok", job_id=outcome.job_id, model=outcome.model or model, provider=outcome.provider,
            prompt_tokens=outcome.usage.prompt_tokens, completion_tokens=outcome.usage.completion_tokens,
            msat=outcome.paid_msat, fee_msat=outcome.fee_msat, latency_s=round(latency, 3),
            prompt_chars=len(prompt), answer_chars=len(outcome.text), prompt=prompt, system=system,
            answer=outcome.text)
    else:
        job_id = getattr(error, "job_id", None)  # PylonClient.ask sets it once the job was published
        entry = HistoryEntry(at=started, status="error", job_id=job_id if isinstance(job_id, str) else None,
                             model=model, provider=provider, latency_s=round(latency, 3),
                             prompt_chars=len(prompt), error=str(error)[:500], prompt=prompt, system=system)
    try:
        with History(db_path("history")) as log:
            log.record(entry, save_text=settings.history_save_text)
    except PylonError as exc:
        err_console.print(f"[yellow]warning:[/] {escape(str(exc))}", highlight=False)


@handle_errors
def ask(
    prompt: Optional[str] = typer.Argument(None, metavar="PROMPT", show_default=False,
                                           help="The prompt; piped stdin is read too (before it); '-': stdin only."),
    relay: Optional[list[str]] = typer.Option(None, "--relay", "-r", metavar="URL", show_default=False,
                                              help=f"Relay URL, repeatable [default: {effective('relays')}]."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="NAME",
                                        help="Model to ask for (default: the provider's)."),
    system: Optional[str] = typer.Option(None, "--system", "-s", metavar="TEXT",
                                         help="A system message before the prompt."),
    template: Optional[str] = typer.Option(None, "--template", "-t", metavar="NAME",
                                           help="Apply a saved template (pylon template save/list)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", metavar="N",
                                             help="Most tokens to generate (>= 1; default: the provider's cap)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", metavar="T",
                                                help="Sampling temperature, 0 to 2."),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", metavar="NPUB",
                                           help="Only this provider (npub or hex); the job is then encrypted to it."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS",
                                            help=f"Seconds to wait for the answer [default: {effective('timeout_s')}]."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it arrives."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr (errors still shown)."),
    plain: bool = typer.Option(False, "--no-encrypt", help="Send a targeted job unencrypted."),
    failover: Optional[bool] = typer.Option(
        None, "--failover/--no-failover", show_default=False,
        help="Ask again elsewhere when the provider errors or stalls and nothing was paid [default: on; off "
             "with --provider]. With --provider: re-sent encrypted to another live provider (untargeted if --no-encrypt)."),
    wallet: Optional[str] = typer.Option(None, "--wallet", metavar="URI", help="Wallet URI to pay with (or PYLON_WALLET)."),
    wallet_file: Optional[Path] = WalletFileOpt,
    max_msat: Optional[int] = typer.Option(None, "--max-msat", metavar="MSAT",
                                           help=f"Most msat to pay for this job [default: {effective('max_msat')}]."),
    bid_msat: Optional[int] = typer.Option(None, "--bid-msat", metavar="MSAT", help="Bid tag sent with the job "
                                           "(default: --max-msat); a quote above it is refused."),
    daily_budget_msat: Optional[int] = typer.Option(
        None, "--daily-budget-msat", metavar="MSAT",
        help=f"Most msat to spend per UTC day, all asks [default: {effective('daily_budget_msat')}]."),
    route: Optional[str] = typer.Option(None, "--route", metavar="POLICY", help="Among paid quotes: cheapest | "
                                        f"fastest | best (score) [default: {effective('route')}]; free beats paid."),
    avoid: Optional[list[str]] = typer.Option(None, "--avoid", metavar="NPUB", show_default=False,
                                              help="Never use this provider (repeatable; config key avoid)."),
    decision_window_ms: Optional[int] = typer.Option(
        None, "--decision-window-ms", metavar="MS",
        help=f"Collect offers this long after the first quote [default: {effective('decision_window_ms')}]."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Ask the swarm: publish a kind-5050 job and print the answer."""
    if verbose:
        setup_logging(True)
    # everything is checked here, before a relay is contacted or anything is signed
    for name, value, low in (("--max-msat", max_msat, 0), ("--bid-msat", bid_msat, 0),
                             ("--daily-budget-msat", daily_budget_msat, 0), ("--timeout", timeout, 0.1)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low:g}, got {value:g}")
    saved = load_template(template) if template else None
    check_params({"max_tokens": max_tokens, "temperature": temperature})
    text = read_prompt(prompt)
    if saved is not None:
        text = saved.render(text)
        system = system if system is not None else saved.system
        model = model or saved.model
        max_tokens = max_tokens if max_tokens is not None else saved.max_tokens
        temperature = temperature if temperature is not None else saved.temperature
        check_params({"max_tokens": max_tokens, "temperature": temperature})
    provider = pubkey_option("--provider", provider)  # a typo'd npub or an nsec: one line, nothing sent
    avoid = [pubkey_option("--avoid", a) or "" for a in avoid or []]
    if route is not None and route not in ("cheapest", "fastest", "best"):
        raise ConfigError(f"--route must be cheapest, fastest or best, got {route!r}")
    settings = load_settings({"relays": relay, "wallet": wallet_from_flags(wallet, wallet_file), "max_msat": max_msat, "timeout_s": timeout,
                              "daily_budget_msat": daily_budget_msat, "route": route, "avoid": avoid,
                              "decision_window_ms": decision_window_ms})
    check_wallet_uri(settings.wallet)
    if not avoid:  # the avoid setting from config.toml or PYLON_AVOID: a bad key names the key and the file
        from pylon.ops.config import setting_pubkeys, setting_source

        settings.avoid = setting_pubkeys(settings, "avoid")
    if provider is not None and provider in settings.avoid:  # a job for one provider it avoids: never answered

        where = "--avoid" if avoid else f"the avoid setting ({setting_source('avoid')})"
        raise ConfigError(f"--provider {npub_of(provider)} is also in {where}: nobody could answer the job",
                          hint="drop one of them" if avoid else "drop --provider, or take it out of avoid "
                               "(`pylon config set avoid …` with the rest, or `pylon config unset avoid` to clear it)")
    run(_ask(text, settings, system=system, model=model, max_tokens=max_tokens, temperature=temperature,
             provider=provider, timeout=settings.timeout_s, stream=stream, as_json=as_json,
             encrypted=False if plain else None, bid_msat=bid_msat, quiet=quiet, failover=failover))
