"""`pylon hub publish|list|pull`: optimized DSPy programs shared as signed NIP-78 events
(dsrs_bridge.programs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import RelayOpt, console, fail, handle_errors, print_json, pubkey_option, run
from pylon.home import identity_path
from cli.defaults import configured_relays

app = typer.Typer(help="Share optimized DSPy programs on Nostr (NIP-78 kind 30078).", no_args_is_help=True)


def _keys():
    from pylon.nostr import Keys

    return Keys.load_or_create(identity_path())


@app.command("publish")
@handle_errors
def publish(
    file: Path = typer.Argument(..., help="A saved program state (program.save('x.json'))."),
    name: str = typer.Option(..., "--name", help="The program's name (the event's d tag)."),
    version: str = typer.Option(..., "--version", help="Its version, e.g. 1.2.0 (must go up)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="The metric it was optimized for."),
    score: Optional[float] = typer.Option(None, "--score", help="Its score on that metric."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="A model it was optimized with (repeatable)."),
    cost_msat: Optional[int] = typer.Option(None, "--cost-msat", help="What optimizing it cost, in msat."),
    trace: Optional[str] = typer.Option(None, "--trace", help="Root event id of the trace it came from."),
    encrypt: bool = typer.Option(False, "--encrypt", help="NIP-44-encrypt the state to your own key."),
    force: bool = typer.Option(False, "--force", help="Publish even if the version is not above the current one."),
    relay: Optional[list[str]] = RelayOpt,
    json_out: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Sign and publish a program's saved state; prints the event id."""
    from dsrs_bridge.programs import publish_program

    if not file.is_file():
        fail(f"no such program file: {file}")
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        fail(f"{file} is not JSON (save the program with program.save('x.json'))")
    if not isinstance(state, dict):
        fail(f"{file} is not a saved program state (a JSON object)")
    record = run(publish_program(_keys(), configured_relays(relay), name, state, version=version, force=force,
                                 metric=metric, score=score, models=model or [], cost_msat=cost_msat,
                                 trace=trace, encrypt=encrypt))
    if json_out:
        print_json(record.summary())
    else:
        console.print(record.event_id, highlight=False)
        console.print(f"[dim]{name} {version}{' · encrypted' if encrypt else ''}[/]", highlight=False)


@app.command("list")
@handle_errors
def list_(
    author: Optional[str] = typer.Option(None, "--author", help="Only this author's programs (npub or hex)."),
    relay: Optional[list[str]] = RelayOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Published programs: the newest version per author and name."""
    from dsrs_bridge.programs import list_programs
    from pylon.nostr import bech32

    author = pubkey_option("--author", author)
    records = run(list_programs(configured_relays(relay), author=author, keys=_keys()))
    if json_out:
        print_json([r.summary() for r in records])
        return
    if not records:
        console.print("no programs found")
        return
    for r in records:
        score = f" · {r.metric or 'score'} {r.score:g}" if r.score is not None else ""
        cost = f" · {r.cost_msat} msat" if r.cost_msat is not None else ""
        lock = " · encrypted" if r.encrypted else ""
        console.print(f"[bold]{r.name}[/] {r.version}{score}{cost}{lock} · {bech32.encode('npub', bytes.fromhex(r.author))}", highlight=False)


@app.command("pull")
@handle_errors
def pull(
    name: str = typer.Argument(..., help="The program's name."),
    author: Optional[str] = typer.Option(None, "--author", help="Its author (npub or hex; default: you)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the state (for program.load)."),
    relay: Optional[list[str]] = RelayOpt,
) -> None:
    """Fetch the newest version of a program, verified, and write its state as JSON."""
    from dsrs_bridge.programs import pull_program

    keys = _keys()
    who = pubkey_option("--author", author) or keys.public_key
    record = run(pull_program(name, configured_relays(relay), author=who, keys=keys))
    output.write_text(json.dumps(record.state, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"{name} {record.version} -> {output}", highlight=False)
