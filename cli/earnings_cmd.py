"""`pylon earnings` and `pylon jobs`: what this provider earned and what its jobs did.

Both read PYLON_HOME/provider.sqlite read-only (pylon.ops.earnings), so they are safe to run
beside a live `pylon serve`. Money rules (received, earned, paid-but-failed, refunds, net) are
in pylon/ops/earnings.py and docs/OPERATING.md.
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import console, handle_errors, print_json
from cli.history_cmd import parse_since, pubkey_filter
from cli.progress import short
from pylon.errors import ConfigError
from pylon.home import db_path
from pylon.ops.earnings import JobReport, csv_rows
from pylon.provider.jobstore import STATES


def _store(path: Optional[Path]) -> Path:
    return path if path is not None else db_path("provider")


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@handle_errors
def earnings(
    by: str = typer.Option("day", "--by", help="Group by day (UTC), model or customer."),
    since: Optional[str] = typer.Option(None, "--since", help="Only jobs since: 30m, 2h, 7d, or an ISO date."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model."),
    customer: Optional[str] = typer.Option(None, "--customer", help="Only this customer (npub, hex, or a hex prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {lines: [...], total: {...}}."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (header, lines, total)."),
    store: Optional[Path] = typer.Option(None, "--store", metavar="PATH",
                                         help="Job store to read [default: PYLON_HOME/provider.sqlite]."),
) -> None:
    """What this provider earned: per day, model or customer; failures, paid-but-failed, refunds."""
    if by not in ("day", "model", "customer"):
        raise ConfigError(f"--by must be day, model or customer, not {by!r}")
    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other")
    customer = pubkey_filter("--customer", customer)
    with JobReport(_store(store)) as report:
        lines, total = report.earnings(by, since=parse_since(since) if since else None,  # type: ignore[arg-type]
                                       model=model, customer=customer)
    if as_json:
        print_json({"by": by, "lines": [line.to_dict() for line in lines], "total": total.to_dict()})
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        for row in csv_rows(lines, total):
            writer.writerow(row)
        return
    if not lines:
        console.print("no jobs in the job store yet", highlight=False)
        return
    table = Table(title_justify="left", show_edge=False)
    columns = (by, "jobs", "delivered", "failed", "expired", "refused", "paid-failed", "earned msat",
               "received msat", "refunded msat", "owed msat", "net msat", "tokens")
    for column in columns:
        table.add_column(column, no_wrap=True, justify="left" if column == by else "right")
    for line in [*lines, total]:
        key = line.key if by != "customer" or line.key == "total" else short(line.key)
        table.add_row(f"[bold]{key}[/]" if line.key == "total" else escape(key), str(line.jobs), str(line.delivered),
                      str(line.failed), str(line.expired), str(line.refused),
                      f"[red]{line.paid_failed}[/]" if line.paid_failed else "0",
                      str(line.earned_msat), str(line.received_msat), str(line.refunded_msat),
                      str(line.refund_owed_msat), str(line.net_msat),
                      f"{line.prompt_tokens}+{line.completion_tokens}")
    console.print(table, highlight=False)


@handle_errors
def jobs(
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Most jobs to show (0: all)."),
    state: Optional[str] = typer.Option(None, "--state", "-s", help=f"Only jobs in this state ({', '.join(STATES)})."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model."),
    customer: Optional[str] = typer.Option(None, "--customer", help="Only this customer (npub, hex, or a hex prefix)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only jobs since: 30m, 2h, 7d, or an ISO date."),
    paid: bool = typer.Option(False, "--paid", help="Only jobs whose invoice was paid."),
    failed: bool = typer.Option(False, "--failed", help="Only quoted jobs that failed or were cancelled."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
    store: Optional[Path] = typer.Option(None, "--store", metavar="PATH",
                                         help="Job store to read [default: PYLON_HOME/provider.sqlite]."),
) -> None:
    """Recent jobs this provider took, newest first, with their state, price and tokens."""
    if state is not None and state not in STATES:
        raise ConfigError(f"--state must be one of {', '.join(STATES)}, not {state!r}")
    customer = pubkey_filter("--customer", customer)
    with JobReport(_store(store)) as report:
        rows = report.jobs(limit=limit or None, status=state, model=model, customer=customer,
                           since=parse_since(since) if since else None, paid=paid, failed=failed)
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        console.print("no jobs match", highlight=False)
        return
    table = Table(title_justify="left", show_edge=False)
    for column in ("seen (UTC)", "job", "state", "model", "customer", "msat", "paid", "tokens", "seconds", "note"):
        table.add_column(column, no_wrap=column != "note", overflow="ellipsis", max_width=60 if column == "note" else None)
    for r in rows:
        tokens = f"{r.prompt_tokens}+{r.completion_tokens}" if r.prompt_tokens is not None else "-"
        note = r.error or ""
        if r.refund_status:
            note = f"{note} (refund {r.refund_status} {r.refund_msat} msat)".strip()
        status = r.status if r.status not in ("error", "cancelled") else f"[red]{r.status}[/]"
        table.add_row(_when(r.seen_at), r.id[:12], status, escape(r.model or "-"), short(r.customer),
                      "-" if r.amount_msat is None else str(r.amount_msat), "yes" if r.paid else "-", tokens,
                      f"{r.updated_at - r.seen_at:.2f}", escape(note))
    console.print(table, highlight=False)
