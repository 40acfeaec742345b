"""`pylon trace watch [--author NPUB]`: running programs' traces, live in the terminal
(rich Live: nodes appear as they start, tokens and msats tick as they end, errors in red),
from the ephemeral events dsrs_bridge.live.record_live publishes."""

from __future__ import annotations

import asyncio
import time
from typing import Optional

import typer
from rich.console import Group
from rich.markup import escape
from rich.tree import Tree

from cli.common import RelayOpt, console, handle_errors, pubkey_option, run


def render(model) -> Group:
    """One tree per trace: the program with running totals, nodes under their callers."""
    from cli.trace_cmd import _label

    if not model.traces:
        return Group("[dim]waiting for a running program's trace…[/]")
    trees = []
    for trace in model.traces.values():
        tokens, msat = trace.totals()
        root_id = next((n for n in trace.order if trace.parents.get(n) is None), None)
        root = trace.nodes.get(root_id) if root_id else None
        done = root is not None and root.ended_at_us is not None
        state = "[red]failed[/]" if root is not None and root.error else ("done" if done else "[yellow]running[/]")
        tree = Tree(f"[bold]{escape(trace.program)}[/] · {len(trace.nodes)} nodes · {tokens} tokens · "
                    f"{msat} msat · {state}")
        origin = root.started_at_us if root is not None else None

        def add(branch: Tree, node_id: str) -> None:
            for child in trace.children(node_id):
                node = trace.nodes[child]
                label = _label(node, None, origin)
                if node.ended_at_us is None:
                    label += " [yellow]…[/]"
                add(branch.add(label), child)

        if root_id is not None:
            add(tree, root_id)
        trees.append(tree)
    return Group(*trees)


@handle_errors
def watch(
    author: Optional[str] = typer.Option(None, "--author", help="Only this author's runs (npub or hex)."),
    relay: Optional[list[str]] = RelayOpt,
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Stop after this long (default: Ctrl-C)."),
) -> None:
    """Watch running programs' traces live (they publish with dsrs_bridge.live.record_live)."""
    from rich.live import Live

    from cli.defaults import configured_relays
    from dsrs_bridge.live import LIVE_KIND, LiveModel
    from pylon.nostr.filters import Filter
    from pylon.relay.pool import RelayPool

    who = pubkey_option("--author", author)
    relays = configured_relays(relay)
    model = LiveModel()
    fields: dict = {"kinds": [LIVE_KIND]}
    if who:
        fields["authors"] = [who]

    async def go() -> None:
        deadline = time.monotonic() + seconds if seconds is not None else None
        async with RelayPool(relays) as pool:
            await pool.wait_connected(fail_fast=True)  # a refused relay is said at once
            sub = pool.subscribe([Filter.of(**fields)])
            with Live(render(model), console=console, refresh_per_second=8, transient=False) as live:
                while deadline is None or time.monotonic() < deadline:
                    try:
                        event = await sub.next(timeout=0.25)
                    except asyncio.TimeoutError:
                        continue
                    if model.apply(event):
                        live.update(render(model))

    try:
        run(go())
    except KeyboardInterrupt:
        pass
