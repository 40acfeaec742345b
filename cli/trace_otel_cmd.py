"""`pylon trace otel TRACE -o FILE | --endpoint URL`: a recorded run as OpenTelemetry spans
(dsrs_bridge.otel; GenAI semantic conventions)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import RelayOpt, console, fail, handle_errors, run
from pylon.home import identity_path


@handle_errors
def otel(
    trace: str = typer.Argument(..., help="A trace's root event id (hex or note1…) or a local trace file."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Append the spans to this OTLP/JSON file."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint",
                                           help="Send to an OTLP/HTTP endpoint (needs opentelemetry-exporter-otlp)."),
    relay: Optional[list[str]] = RelayOpt,
) -> None:
    """Export a program trace as OpenTelemetry spans."""
    from cli.defaults import configured_relays
    from cli.trace_cmd import _event_id, _load_trace_file
    from dsrs_bridge.nostr_trace import fetch_trace
    from dsrs_bridge.otel import export_graph, write_otlp_json
    from pylon.nostr import Keys

    if (output is None) == (endpoint is None):
        fail("give one of --output FILE or --endpoint URL")
    if Path(trace).is_file():
        graph = _load_trace_file(Path(trace))
    else:
        graph = run(fetch_trace(_event_id(trace), configured_relays(relay), keys=Keys.load_or_create(identity_path())))
    if output is not None:
        count = write_otlp_json(graph, output)
        console.print(f"{count} spans -> {output}", highlight=False)
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[import-not-found]
    except ImportError:
        fail("--endpoint needs the OTLP exporter", hint="pip install opentelemetry-exporter-otlp-proto-http")
    spans = export_graph(graph, OTLPSpanExporter(endpoint=endpoint))
    console.print(f"{len(spans)} spans -> {endpoint}", highlight=False)
