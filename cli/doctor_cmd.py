"""`pylon doctor`: one line per check (✓/✗), what is wrong and how to fix it; exit 1 on failure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from cli.common import console, handle_errors, print_json, run

if TYPE_CHECKING:  # imported when the command runs: pylon.ops.doctor loads the settings' pydantic models
    from pylon.ops.doctor import Report

_MARK = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[bold red]✗[/]", "skip": "[dim]-[/]"}  # by Level value


def _render(report: Report) -> None:
    from pylon.ops.doctor import Level

    for f in report.findings:  # findings quote what the user gave (URLs, paths): escaped, never markup
        timing = f" [dim]({f.ms:.0f} ms)[/]" if f.ms is not None and f.level is Level.OK else ""
        console.print(f"{_MARK[f.level.value]} {escape(f.check)} {escape(f.target)} [bold]{escape(f.step)}[/]: "
                      f"{escape(f.detail)}{timing}", highlight=False, markup=True, soft_wrap=True)
        if f.fix and f.level in (Level.FAIL, Level.WARN):
            console.print(f"    [dim]fix:[/] {escape(f.fix)}", highlight=False, soft_wrap=True)
    failed = sum(1 for f in report.findings if f.level is Level.FAIL)
    if failed:
        console.print(f"[bold red]{failed} problem{'s' if failed != 1 else ''} found[/]")
    else:
        console.print("[green]all checks passed[/]")


@handle_errors
def doctor(
    relay: list[str] = typer.Option([], "--relay", help="Relay URL to check (repeatable; default: configured)."),
    backend: str | None = typer.Option(None, "--backend", help="OpenAI-compatible base URL (default: configured)."),
    wallet: str | None = typer.Option(None, "--wallet", help="Wallet URI (default: configured; never printed)."),
    no_backend: bool = typer.Option(False, "--no-backend", help="Skip the backend check (customers need none)."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds per network step."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report."),
) -> None:
    """Check the configuration, each relay (connect, NIP-11, publish/read), the backend and the wallet."""
    from pylon.ops.doctor import run_doctor

    report = run(run_doctor(relays=relay or None, backend=backend, wallet=wallet, timeout=timeout,
                            check_backend_too=not no_backend))
    if json_out:
        print_json(report.to_dict())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(1)
