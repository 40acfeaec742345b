"""`pylon trace publish|show`: execution DAGs as signed Nostr notes, and back as a tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.tree import Tree

from cli.common import RelayOpt, console, fail, handle_errors, print_json, pubkey_option, run
from cli.defaults import configured_relays
from pylon.home import identity_path

app = typer.Typer(help="Publish and show program traces (execution DAGs) on Nostr.", no_args_is_help=True)


def _load_trace_file(path: Path):
    """A recorded graph JSON (dsrs_bridge.graph) or a dsrs JSONL v1 trace, told apart by content."""
    from dsrs_bridge.dsrs_import import import_dsrs_jsonl
    from dsrs_bridge.graph import Graph, TraceFormatError

    if not path.is_file():
        fail(f"no such trace file: {path}")
    text = path.read_text(encoding="utf-8")
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if isinstance(head, dict) and "h" in head:
        return import_dsrs_jsonl(text)
    try:
        return Graph.from_json(text)
    except TraceFormatError as exc:
        raise TraceFormatError(f"{path} is neither a Pylon trace graph nor a dsrs JSONL trace: {exc}") from None


def _event_id(value: str) -> str:
    from pylon.nostr.bech32 import event_id_from

    event_id = event_id_from(value)
    if event_id is None:
        fail("EVENT_ID must be the trace's root event id (64 hex characters, note1… or nevent1…)")
    return event_id


@app.command("publish")
@handle_errors
def publish(
    file: Path = typer.Argument(..., help="A recorded graph (.json) or a dsrs JSONL trace."),
    relay: Optional[list[str]] = RelayOpt,
    include_content: bool = typer.Option(False, "--include-content",
                                         help="Publish prompt/output text too (default: sha256 + length only)."),
    encrypt_to: Optional[str] = typer.Option(None, "--encrypt-to",
                                             help="With --include-content: NIP-44-encrypt the text to this npub/hex."),
    encrypt_to_self: bool = typer.Option(False, "--encrypt-to-self",
                                         help="With --include-content: encrypt the text to your own key."),
    as_notes: bool = typer.Option(False, "--as-notes",
                                  help="Publish as kind-1 notes (shows as a thread on followers' timelines) "
                                       "instead of the dedicated trace kind 3571."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Sign and publish a trace (kind 3571, or kind-1 notes with --as-notes); prints the root event id."""
    from dsrs_bridge.nostr_trace import TRACE_KIND, publish_trace
    from pylon.nostr import Keys

    if (encrypt_to or encrypt_to_self) and not include_content:
        fail("--encrypt-to/--encrypt-to-self only make sense with --include-content")
    encrypt_to = pubkey_option("--encrypt-to", encrypt_to)
    graph = _load_trace_file(file)
    keys = Keys.load_or_create(identity_path())
    recipient = keys.public_key if encrypt_to_self else encrypt_to
    relays = configured_relays(relay)
    root_id = run(publish_trace(graph, relays, keys, include_content=include_content, encrypt_to=recipient,
                                kind=1 if as_notes else TRACE_KIND))
    prompt, completion = graph.total_tokens()
    data = {"root_event_id": root_id, "trace_id": graph.trace_id, "program": graph.program,
            "events": len(graph.nodes), "tokens": prompt + completion, "msat": graph.total_msat(),
            "relays": relays, "content": "encrypted" if recipient else ("plain" if include_content else "hashes")}
    if json_out:
        print_json(data)
    else:
        console.print(root_id, highlight=False)
        console.print(f"[dim]{len(graph.nodes)} events · {prompt + completion} tokens · "
                      f"{graph.total_msat()} msat · content: {data['content']}[/]", highlight=False)


def _label(node, graph, origin_us: int | None) -> str:
    """One tree line: dsrs_bridge.nostr_trace.node_facts with colour (rich markup)."""
    from dsrs_bridge.nostr_trace import node_facts
    from rich.markup import escape

    colour = {"Root": "bold", "Predict": "cyan", "Operator": "green", "Map": "magenta"}.get(node.kind, "")
    text = f"[{colour}]{escape(node.kind)}[/]/{escape(node.role)} [bold]{escape(node.name)}[/]"
    if node.signature:
        text += f" [dim]({escape(node.signature)})[/]"
    facts = node_facts(node, graph, origin_us=origin_us)
    if facts:
        text += " · " + " · ".join(escape(f) for f in facts)
    if node.error:
        text += f" [red]{escape(node.error)}[/]"
    return text


def render_tree(graph) -> Tree:
    """A rich tree over call edges; data edges appear on Map nodes as lineage."""
    from dsrs_bridge.nostr_trace import summary_line
    from rich.markup import escape

    root = graph.root
    tree = Tree(escape(summary_line(graph)))
    kids: dict[str, list[str]] = {}
    for e in graph.edges:
        if e.kind == "call":
            kids.setdefault(e.parent, []).append(e.child)
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    by_id = {n.id: n for n in graph.nodes}

    def add(branch: Tree, node_id: str) -> None:
        for child in sorted(kids.get(node_id, []), key=order.__getitem__):
            add(branch.add(_label(by_id[child], graph, root.started_at_us)), child)

    add(tree.add(_label(root, graph, root.started_at_us)), root.id)
    return tree


@app.command("show")
@handle_errors
def show(
    event_id: str = typer.Argument(..., help="The trace's root event id (hex or note1…), or a local trace file."),
    relay: Optional[list[str]] = RelayOpt,
    json_out: bool = typer.Option(False, "--json", help="Print the graph as JSON."),
) -> None:
    """Fetch a trace and show it as a tree with timings, tokens and msats."""
    from dsrs_bridge.nostr_trace import fetch_trace
    from pylon.nostr import Keys

    if Path(event_id).is_file():
        graph = _load_trace_file(Path(event_id))
    else:
        root_id = _event_id(event_id)
        path = identity_path()
        keys = Keys.load(path) if path.exists() else None  # decrypts content encrypted to us
        graph = run(fetch_trace(root_id, configured_relays(relay), keys=keys))
    if json_out:
        print_json(graph.to_dict())
    else:
        console.print(render_tree(graph))
