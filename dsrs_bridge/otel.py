"""A recorded program run as OpenTelemetry spans, so it opens in the tracing tools people
already use (Jaeger, Tempo, Honeycomb, Phoenix, Langfuse...).

One span per node, parented along call edges, with the node's own start and end times;
dataflow edges become span links. LM calls follow the OpenTelemetry GenAI semantic
conventions: span name "chat <model>", gen_ai.operation.name = "chat",
gen_ai.provider.name = "pylon", gen_ai.request.model, gen_ai.usage.input_tokens /
output_tokens; every span also carries pylon.node.* (kind, role, id), pylon.signature,
pylon.msat and pylon.job_ids. A failed node gets status ERROR, its message and error.type.

`export_graph(graph, exporter)` hands the spans to any SpanExporter (the SDK's in-memory
exporter, or opentelemetry-exporter-otlp's OTLPSpanExporter for an endpoint);
`write_otlp_json(graph, path)` writes an OTLP/JSON file (the OTLP file exporter's format)
without any extra package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from dsrs_bridge.graph import Graph, Node

SCOPE = "pylon.dsrs_bridge"


def _attributes(node: Node, graph: Graph) -> dict[str, Any]:
    attrs: dict[str, Any] = {"pylon.node.id": node.id, "pylon.node.kind": node.kind, "pylon.node.role": node.role}
    if node.kind == "Root":
        attrs.update({"pylon.trace_id": graph.trace_id, "pylon.program": graph.program})
    if node.signature:
        attrs["pylon.signature"] = node.signature
    if node.paid_msat is not None:
        attrs["pylon.msat"] = node.paid_msat
    if node.jobs:
        attrs["pylon.job_ids"] = [j.event_id for j in node.jobs]
        providers = [j.provider for j in node.jobs if j.provider]
        if providers:
            attrs["pylon.providers"] = providers
    if node.role == "lm":
        attrs.update({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "pylon"})
        if node.model:
            attrs["gen_ai.request.model"] = node.model
    if node.prompt_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = node.prompt_tokens
    if node.completion_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = node.completion_tokens
    if node.error:
        attrs["error.type"] = node.error.split(":", 1)[0]
    return attrs


def _span_name(node: Node) -> str:
    if node.role == "lm":
        return f"chat {node.model or node.name}"
    return f"{node.kind} {node.name}".strip()


def export_graph(graph: Graph, exporter: Any, *, service_name: str = "pylon-program") -> list[Any]:
    """Emit the graph's spans to `exporter` (an opentelemetry SpanExporter); returns the spans."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Link, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(SCOPE)
    graph.validate()
    origin = graph.root.started_at_us or 0
    spans: dict[str, Any] = {}
    for node in graph.nodes:  # parents first (the graph's order is topological)
        parent = graph.call_parent(node.id)
        context = trace.set_span_in_context(spans[parent]) if parent in spans else None
        links = [Link(spans[p].get_span_context()) for p in graph.parents(node.id, "data") if p in spans]
        start_us = node.started_at_us if node.started_at_us is not None else origin
        span = tracer.start_span(_span_name(node), context=context, links=links,
                                 attributes=_attributes(node, graph), start_time=start_us * 1000)
        if node.error:
            span.set_status(Status(StatusCode.ERROR, node.error))
        spans[node.id] = span
    for node in reversed(graph.nodes):  # children end before their parents are handed over
        end_us = node.ended_at_us if node.ended_at_us is not None else (node.started_at_us or origin)
        spans[node.id].end(end_time=end_us * 1000)
    provider.shutdown()
    return list(spans.values())


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def otlp_json(spans: Sequence[Any]) -> dict[str, Any]:
    """ReadableSpans as an OTLP/JSON ExportTraceServiceRequest (ids in hex, times in ns)."""
    resource = spans[0].resource.attributes if spans else {}
    out = []
    for s in spans:
        ctx = s.get_span_context()
        item: dict[str, Any] = {
            "traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}", "name": s.name, "kind": 1,
            "startTimeUnixNano": str(s.start_time), "endTimeUnixNano": str(s.end_time),
            "attributes": [{"key": k, "value": _value(v)} for k, v in (s.attributes or {}).items()],
            "links": [{"traceId": f"{link.context.trace_id:032x}", "spanId": f"{link.context.span_id:016x}"}
                      for link in s.links],
        }
        if s.parent is not None:
            item["parentSpanId"] = f"{s.parent.span_id:016x}"
        if s.status.status_code.name == "ERROR":
            item["status"] = {"code": 2, "message": s.status.description or ""}
        out.append(item)
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": k, "value": _value(v)} for k, v in resource.items()]},
        "scopeSpans": [{"scope": {"name": SCOPE}, "spans": out}],
    }]}


def write_otlp_json(graph: Graph, path: str | Path, *, service_name: str = "pylon-program") -> int:
    """Write the graph as one OTLP/JSON line (append-friendly, like the OTLP file exporter)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    export_graph(graph, memory, service_name=service_name)
    spans = memory.get_finished_spans()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(otlp_json(spans), separators=(",", ":")) + "\n")
    return len(spans)
