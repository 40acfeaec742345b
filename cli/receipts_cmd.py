"""`pylon receipts [--json]`: what this client paid, with totals per provider and per day."""

from __future__ import annotations

from datetime import datetime, timezone

import typer
from rich.table import Table

from cli.common import console, handle_errors, print_json
from cli.progress import short


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else ""


@handle_errors
def receipts(json_out: bool = typer.Option(False, "--json", help="Print a JSON object."),
             limit: int = typer.Option(50, "--limit", min=1, help="Newest receipts to list."),
             failed: bool = typer.Option(False, "--failed", help="Also list failed attempts.")) -> None:
    """List payment receipts (PYLON_HOME/ledger.sqlite) with totals per provider and per UTC day."""
    from pylon.customer.ledger import Ledger

    with Ledger() as led:
        rows = led.receipts(limit=limit, include_failed=failed)
        by_provider = led.totals_by_provider()
        by_day = led.totals_by_day()
        total, pending = led.paid_msat(), led.pending_msat()
    if json_out:
        print_json({"receipts": [r.to_dict() for r in rows], "totals_by_provider": by_provider,
                    "totals_by_day": by_day, "total_msat": total, "pending_msat": pending})
        return
    if not rows:
        console.print("no receipts yet")
        return
    table = Table(title="Receipts (newest first)")
    for col in ("time (UTC)", "job", "provider", "amount msat", "fee msat", "status", "payment hash"):
        table.add_column(col, justify="right" if "msat" in col else "left")
    for r in rows:
        style = {"paid": "green", "pending": "yellow", "failed": "red"}.get(r.status, "")
        table.add_row(_ts(r.created_at), r.job_id[:12], short(r.provider), str(r.amount_msat), str(r.fee_msat),
                      f"[{style}]{r.status}[/]", r.payment_hash[:16])
    console.print(table)
    for title, totals in (("Totals per provider", by_provider), ("Totals per day (UTC)", by_day)):
        t = Table(title=title)
        t.add_column("provider" if "provider" in title else "day")
        for col in ("payments", "amount msat", "fee msat"):
            t.add_column(col, justify="right")
        for key, v in totals.items():
            t.add_row(short(key) if "provider" in title else key, str(v["count"]), str(v["amount_msat"]), str(v["fee_msat"]))
        console.print(t)
    console.print(f"total paid: {total} msat" + (f" (and {pending} msat pending: outcome not known yet)"
                                                  if pending else ""), highlight=False)
