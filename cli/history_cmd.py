"""`pylon history`: every ask this machine made (free ones too), newest first, like `llm logs`.

Each `pylon ask` appends one row to PYLON_HOME/history.sqlite (mode 0600): time, status,
model, provider, tokens, msat (+ fee), latency, and the job id; prompt and answer text only
when `history.save_text` is on (`pylon config set history.save_text true`).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Optional

import typer
from rich.table import Table

from cli.common import console, handle_errors, print_json, pubkey_option
from cli.progress import short
from pylon.customer.history import History
from pylon.errors import ConfigError
from pylon.home import db_path

_AGO = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str) -> float:
    """`30m`, `2h`, `7d`, `1w`, or an ISO date/time (UTC when no zone) -> unix time."""
    text = value.strip().lower()
    match = _AGO.match(text)
    if match:
        return time.time() - int(match.group(1)) * _SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"--since expects a duration like 30m, 2h, 7d or an ISO date, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def pubkey_filter(flag: str, value: str | None) -> str | None:
    """A key filter as stored (hex): an npub (or a whole hex key) becomes its hex; a hex prefix stays."""
    if value is None or not value.strip().lower().startswith(("npub", "nsec")) and len(value.strip()) < 64:
        return value
    return pubkey_option(flag, value)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: object) -> str:
    return "-" if value is None else str(value)


@handle_errors
def history(
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Most entries to show (0: all)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only asks for this model."),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", help="Only this provider (npub, hex, or a hex prefix)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only asks since: 30m, 2h, 7d, or an ISO date."),
    errors: bool = typer.Option(False, "--errors", help="Only asks that failed."),
    paid: bool = typer.Option(False, "--paid", help="Only paid asks."),
    free: bool = typer.Option(False, "--free", help="Only free asks."),
    search: Optional[str] = typer.Option(None, "--search", "-q", help="Only asks whose saved text contains this."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """Show past asks: time, model, provider, tokens, msat, latency (text with history.save_text)."""
    if paid and free:
        raise ConfigError("--paid and --free exclude each other")
    provider = pubkey_filter("--provider", provider)
    with History(db_path("history")) as log:
        entries = log.query(limit=limit or None, model=model, provider=provider,
                            since=parse_since(since) if since else None, status="error" if errors else None,
                            paid=True if paid else (False if free else None), search=search)
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    if not entries:
        console.print("no asks recorded yet" if not any((model, provider, since, errors, paid, free, search))
                      else "no asks match", highlight=False)
        return
    table = Table(title_justify="left", show_edge=False)
    for column in ("time (UTC)", "status", "model", "provider", "tokens", "msat", "latency"):
        table.add_column(column, no_wrap=True)
    saved = any(e.prompt is not None for e in entries)
    if saved:
        table.add_column("prompt", overflow="ellipsis", max_width=40, no_wrap=True)
    for e in entries:
        tokens = f"{_num(e.prompt_tokens)}+{_num(e.completion_tokens)}" if e.prompt_tokens is not None else "-"
        row = [_when(e.at), e.status if e.status == "ok" else f"[red]{e.status}[/]", e.model or "-",
               short(e.provider) if e.provider else "-", tokens,
               str(e.msat) + (f" +{e.fee_msat}" if e.fee_msat else ""),
               f"{e.latency_s:.2f}s" if e.latency_s is not None else "-"]
        if saved:
            row.append((e.prompt or "").replace("\n", " "))
        table.add_row(*row)
    console.print(table, highlight=False)
