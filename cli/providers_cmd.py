"""`pylon providers`: who serves kind-5050 jobs on these relays (NIP-89 discovery).

Live providers only, by default: an announcement that has expired (NIP-40) or, for software
that sets no expiration, was not refreshed within an hour, is stale (`--all` lists those too,
marked). Each row has the full npub, models, context length, prices, when it was last
active (its last announcement, or this client's last job with it if later) and this
client's score for it from the local scoreboard (pylon.customer.scoreboard; "-" when there is
no evidence yet).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import typer
from rich.table import Table

from cli.common import RelayOpt, console, handle_errors, print_json, run
from cli.defaults import load_settings


def _ago(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


async def _discover(relays: list[str], model: Optional[str], timeout: float,
                    trusted: list[str]) -> tuple[list, dict]:
    from pylon.customer.reviews import read_reviews
    from pylon.jobs.nip89 import discover
    from pylon.relay.pool import RelayPool

    async with RelayPool(relays) as pool:
        await pool.wait_connected(fail_fast=True)  # a refused relay is reported at once, as by ask
        found = await discover(pool, model=model, timeout=timeout)
        return found, await read_reviews(pool, trusted, timeout=timeout)  # only from trusted_reviewers


def _rows(found: list, show_all: bool, reviews: dict | None = None) -> list[dict[str, Any]]:
    from pylon.customer.scoreboard import Scoreboard

    now = time.time()
    with Scoreboard(strict=True) as board:
        scores = board.scores()
    rows = []
    for p in found:
        live = p.live(now)
        if not live and not show_all:
            continue
        s = scores.get(p.pubkey)
        last_active = max(p.last_seen, s.last_at or 0) if s is not None else p.last_seen
        rows.append({**p.model_dump(), "npub": p.npub, "live": live, "last_active": int(last_active),
                     "score": s.to_dict() if s is not None else None,
                     "reviews": reviews[p.pubkey].to_dict() if reviews and p.pubkey in reviews else None})
    return rows


@handle_errors
def providers(
    relay: Optional[list[str]] = RelayOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only providers announcing this model."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for the relays."),
    show_all: bool = typer.Option(False, "--all", help="Include stale providers (expired announcements)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List live kind-5050 providers from their NIP-89 announcements, with this client's score."""
    from pylon.ops.config import setting_pubkeys

    settings = load_settings({"relays": relay})
    trusted = setting_pubkeys(settings, "trusted_reviewers")  # a bad key names the setting and the file
    found, reviews = run(_discover(settings.relays, model, timeout, trusted))
    rows = _rows(found, show_all, reviews)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(("no provider announcements" if show_all else "no live providers (--all lists stale ones)")
                      + " on " + ", ".join(settings.relays))
        return
    table = Table(title=f"{len(rows)} {'' if show_all else 'live '}provider(s)")
    for col in ("provider", "name", "models", "context", "msat/job", "msat/1k tok", "last active", "score"):
        table.add_column(col, overflow="fold")
    for r in rows:
        s = r["score"]
        score = f"{s['score']:.2f} ({s['delivered']}/{s['jobs']} ok)" if s else "-"
        if r.get("reviews"):
            rv = r["reviews"]
            score += f"; trusted reviews {rv['delivered']}/{rv['jobs']} ok"
        table.add_row(r["npub"] + ("" if r["live"] else " (stale)"), r["name"], ", ".join(r["models"]) or "?",
                      _context_row(r), str(r["price_msat"]), str(r["price_per_1k_tokens_msat"]),
                      _ago(r["last_active"]), score)
    console.print(table)


def _context_row(r: dict[str, Any]) -> str:
    lengths = sorted(set((r.get("context_lengths") or {}).values()))
    return "/".join(str(n) for n in lengths) or str(r.get("max_tokens") or "?")
