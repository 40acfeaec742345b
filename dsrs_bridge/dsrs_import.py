"""Import a trace written by the Rust port (dsrs, crate dspy-rs) into a Pylon Graph.

The format is dsrs' JSONL trace, version 1 (RFC 0001; writer and reader in
crates/dspy-rs/src/trace/serialize.rs, types in crates/dspy-rs/src/trace/span.rs):

    {"h": TraceMeta, "components": [...], "models": [...], "prefixes": [...]}   header
    {"id": 0, "component": 0, "seq": 0, "parent": null, ...}                    one line per Span
    {"f": TraceOutcome}                                                           optional footer

Mapping onto the shared vocabulary: the rollout becomes the Root (its input from
`h.input`, its output/error/duration from the footer); each Span — one Predict
invocation — a Predict node (role "span") under its enclosing span (`parent`) or
the Root; each `exchange` event a Predict node (role "exchange": one provider
round trip, its own usage; not summed again) and each `tool_run` an Operator
(role "tool") under the span. Unknown event tags are skipped as the Rust reader
skips them; a newer version is refused. When a span carries RFC 0001's draft
`links` (dataflow predecessors) they become data edges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsrs_bridge.graph import Edge, Graph, Node, Payload, TraceFormatError

DSRS_TRACE_VERSION = 1


def _obj(line: str, lineno: int) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise TraceFormatError(f"dsrs trace line {lineno} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TraceFormatError(f"dsrs trace line {lineno} must be a JSON object")
    return data


def _uint(data: dict, name: str, lineno: int, default: int | None = None) -> int:
    value = data.get(name, default)
    if type(value) is not int or value < 0:
        raise TraceFormatError(f"dsrs trace line {lineno}: {name} must be a non-negative integer")
    return value


def _usage(node: Node, usage: Any) -> None:
    if isinstance(usage, dict):
        for src, dst in (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens")):
            if type(usage.get(src)) is int:
                setattr(node, dst, usage[src])


def _field_payloads(fields: Any, keep: bool) -> dict[str, Payload]:
    if not isinstance(fields, dict):
        return {}
    return {str(k): Payload.of(v, keep=keep) for k, v in fields.items()}


def _message_text(message: Any) -> Any:
    """The messages as sent (role + content blocks), for hashing; unchanged JSON."""
    return message


def import_dsrs_jsonl(source: str | Path, *, capture_content: bool = True) -> Graph:
    """Parse a dsrs JSONL v1 trace (a path, or the text itself when it starts with '{')."""
    text = source if isinstance(source, str) and source.lstrip().startswith("{") else Path(source).read_text("utf-8")
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise TraceFormatError("empty dsrs trace file")
    lineno, header_line = lines[0]
    header = _obj(header_line, lineno)
    meta = header.get("h")
    if not isinstance(meta, dict):
        raise TraceFormatError("not a dsrs trace: the first line has no \"h\" header object")
    version = meta.get("v")
    if type(version) is not int:
        raise TraceFormatError("dsrs trace header lacks its format version \"v\"")
    if version > DSRS_TRACE_VERSION:
        raise TraceFormatError(f"dsrs trace format version {version} is newer than supported version {DSRS_TRACE_VERSION}")
    trace_id = meta.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        raise TraceFormatError("dsrs trace header lacks a trace_id")
    components = header.get("components", [])
    models = header.get("models", [])
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise TraceFormatError("dsrs trace header: components must be a list of names")
    if not isinstance(models, list):
        raise TraceFormatError("dsrs trace header: models must be a list")
    prefixes = header.get("prefixes", [])
    tags = meta.get("tags", {}) if isinstance(meta.get("tags", {}), dict) else {}

    program = str(tags.get("program") or tags.get("name") or "dsrs")
    root = Node("dsrs-root", "Root", "program", program,
                started_at_us=_uint(meta, "started_at_us", lineno, 0))
    root.inputs = _field_payloads(meta.get("input"), capture_content)
    root.attrs["dsrs_trace_id"] = trace_id
    root.attrs["dsrs_version"] = str(version)
    if meta.get("candidate_hash") is not None:
        root.attrs["candidate_hash"] = str(meta["candidate_hash"])
    for key, value in sorted(tags.items()):
        root.attrs[f"tag.{key}"] = str(value)
    graph = Graph(trace_id=trace_id, program=program, source="dsrs", nodes=[root])
    graph.attrs["format"] = "dsrs-jsonl-v1"

    span_nodes: dict[int, Node] = {}
    latest_end = root.started_at_us or 0
    outcome: dict | None = None
    for lineno, line in lines[1:]:
        data = _obj(line, lineno)
        if "f" in data and isinstance(data["f"], dict) and "id" not in data:
            outcome = data["f"]
            continue
        span_id = _uint(data, "id", lineno)
        if span_id in span_nodes:
            raise TraceFormatError(f"dsrs trace line {lineno}: duplicate span id {span_id}")
        comp = _uint(data, "component", lineno)
        if comp >= len(components):
            raise TraceFormatError(f"dsrs trace line {lineno}: component {comp} is not in the header's table")
        model_index = _uint(data, "model", lineno, 0)
        started = _uint(data, "started_at_us", lineno)
        duration = _uint(data, "duration_us", lineno, 0)
        node = Node(f"span-{span_id}", "Predict", "span", components[comp],
                    started_at_us=started, ended_at_us=started + duration)
        if model_index < len(models) and isinstance(models[model_index], dict):
            config = models[model_index].get("config") or {}
            if isinstance(config.get("model"), str):
                node.model = config["model"]
            for key in ("temperature", "max_tokens"):
                if config.get(key) is not None:
                    node.attrs[key] = str(config[key])
        _usage(node, data.get("usage"))
        node.attrs["seq"] = str(_uint(data, "seq", lineno, 0))
        node.attrs["request_hash"] = str(data.get("request_hash", ""))
        node.attrs["complete"] = "true" if data.get("complete", True) else "false"
        if isinstance(data.get("eval"), dict):
            node.attrs["eval.score"] = repr(float(data["eval"].get("score", 0.0)))
        node.inputs = _field_payloads(data.get("input"), capture_content)
        node.input_fields = list(node.inputs)
        prefix = data.get("prefix")
        prompt: list[Any] = []
        if type(prefix) is int and 0 <= prefix < len(prefixes) and isinstance(prefixes[prefix], dict):
            prompt.extend(prefixes[prefix].get("messages") or [])
        prompt.extend(data.get("suffix") or [])
        node.inputs["prompt"] = Payload.of(prompt, keep=capture_content)
        output = data.get("output")
        node.outputs = _field_payloads(output, capture_content)
        node.output_fields = list(node.outputs)
        if isinstance(data.get("raw_output"), str):
            node.outputs["raw_output"] = Payload.of(data["raw_output"], keep=capture_content)
        error = data.get("error")
        if isinstance(error, dict):
            node.error = f"{error.get('kind', 'error')}: {error.get('message', '')}"
        parent = data.get("parent")
        if parent is None:
            parent_id = root.id
        elif type(parent) is int and parent in span_nodes:
            parent_id = span_nodes[parent].id
        else:
            raise TraceFormatError(f"dsrs trace line {lineno}: parent span {parent!r} is not an earlier span")
        graph.nodes.append(node)
        graph.edges.append(Edge(parent_id, node.id, "call"))
        for link in data.get("links") or []:
            if type(link) is int and link in span_nodes:
                graph.edges.append(Edge(span_nodes[link].id, node.id, "data"))
        span_nodes[span_id] = node
        latest_end = max(latest_end, node.ended_at_us or 0)
        _import_events(graph, node, data.get("events") or [], lineno, capture_content)

    root.ended_at_us = latest_end
    if outcome is not None:
        if type(outcome.get("duration_us")) is int and root.started_at_us is not None:
            root.ended_at_us = root.started_at_us + outcome["duration_us"]
        root.outputs = _field_payloads(outcome.get("output"), capture_content)
        if isinstance(outcome.get("error"), str):
            root.error = outcome["error"]
        if isinstance(outcome.get("eval"), dict):
            root.attrs["eval.score"] = repr(float(outcome["eval"].get("score", 0.0)))
            if isinstance(outcome["eval"].get("feedback"), str):
                root.attrs["eval.feedback"] = outcome["eval"]["feedback"]
    graph.sort_topologically()
    graph.normalize()
    graph.validate()
    return graph


def _import_events(graph: Graph, span: Node, events: list, lineno: int, keep: bool) -> None:
    if not isinstance(events, list):
        raise TraceFormatError(f"dsrs trace line {lineno}: events must be a list")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            continue
        tag = event.get("t")
        node_id = f"{span.id}.{index}"
        if tag == "exchange":
            node = Node(node_id, "Predict", "exchange", span.model or "exchange", model=span.model)
            _usage(node, event.get("usage"))
            node.outputs["message"] = Payload.of(_message_text(event.get("message")), keep=keep)
        elif tag == "tool_run":
            node = Node(node_id, "Operator", "tool", str(event.get("name") or "tool"))
            node.inputs["args"] = Payload.of(event.get("args"), keep=keep)
            node.outputs["result"] = Payload.of(event.get("result", ""), keep=keep)
            if isinstance(event.get("error"), str):
                node.error = event["error"]
            if type(event.get("duration_us")) is int:
                node.attrs["duration_us"] = str(event["duration_us"])
            if isinstance(event.get("id"), str):
                node.attrs["tool_call_id"] = event["id"]
        else:
            continue  # unknown tags from a newer writer are skipped, as dsrs' reader does
        node.attrs["index"] = str(index)
        graph.nodes.append(node)
        graph.edges.append(Edge(span.id, node.id, "call"))
