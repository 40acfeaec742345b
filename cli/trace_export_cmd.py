"""`pylon trace export ROOT_ID... -o examples.jsonl`: past runs as a DSPy trainset
(dsrs_bridge.extract). Traces are fetched from the relays (content encrypted to your key is
decrypted with it) or read from local trace files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import RelayOpt, console, fail, handle_errors, run
from pylon.home import identity_path


@handle_errors
def export(
    traces: list[str] = typer.Argument(..., help="Root event ids (hex or note1…) or local trace files."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the examples (JSON lines)."),
    signature: Optional[str] = typer.Option(None, "--signature",
                                            help="Only this predictor: a signature ('question -> answer') or name."),
    relay: Optional[list[str]] = RelayOpt,
) -> None:
    """Extract the successful predictor calls of traces as deduplicated DSPy examples."""
    from cli.defaults import configured_relays
    from cli.trace_cmd import _event_id, _load_trace_file
    from dsrs_bridge.extract import extract_examples, save_jsonl
    from dsrs_bridge.nostr_trace import fetch_trace
    from pylon.nostr import Keys

    keys = Keys.load_or_create(identity_path())
    graphs = []
    for item in traces:
        if Path(item).is_file():
            graphs.append(_load_trace_file(Path(item)))
        else:
            graphs.append(run(fetch_trace(_event_id(item), configured_relays(relay), keys=keys)))
    examples = extract_examples(graphs, signature=signature)
    if not examples:
        fail("no examples: the traces have no successful predictor calls with their text "
             "(publish with --include-content, encrypted to your key, to learn from them)")
    count = save_jsonl(examples, output)
    console.print(f"{count} examples from {len(graphs)} traces -> {output}", highlight=False)
