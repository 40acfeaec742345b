"""OpenTelemetry export of a recorded two-level program (a real dspy.LM on the chat DOUBLE
over HTTP), read back with the SDK's in-memory exporter."""

from __future__ import annotations

import json

import dspy
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dsrs_bridge.otel import export_graph, write_otlp_json
from dsrs_bridge.recorder import record

from test_recorder import Outer


def recorded(chat_double):
    model = dspy.LM("openai/double", api_base=chat_double.base_url, api_key="test-key", cache=False)
    prog = Outer()
    with dspy.context(lm=model, adapter=dspy.ChatAdapter()), record(prog) as graph:
        prog(question="What is a relay?")
    return graph


def test_spans_follow_the_call_tree_with_genai_attributes(chat_double):
    graph = recorded(chat_double)
    memory = InMemorySpanExporter()
    export_graph(graph, memory)
    spans = memory.get_finished_spans()
    assert len(spans) == len(graph.nodes)
    by_node = {s.attributes["pylon.node.id"]: s for s in spans}
    assert len({s.context.trace_id for s in spans}) == 1
    for node in graph.nodes:
        span, parent = by_node[node.id], graph.call_parent(node.id)
        if parent is None:
            assert span.parent is None and node.kind == "Root"
        else:  # the right parent span, and it encloses the child in time
            assert span.parent.span_id == by_node[parent].context.span_id
            assert by_node[parent].start_time <= span.start_time <= span.end_time <= by_node[parent].end_time
    # two levels: Outer -> Inner -> Predict -> LM call
    names = {s.attributes["pylon.node.id"]: s.name for s in spans}
    inner_predict = next(n for n in graph.nodes if n.signature == "question -> summary")
    chain = [inner_predict.id]
    while graph.call_parent(chain[-1]) is not None:
        chain.append(graph.call_parent(chain[-1]))
    assert [names[c] for c in reversed(chain)][1:] == ["Operator Outer", "Operator inner", "Predict inner.summarize"]
    lm_spans = [s for s in spans if s.attributes["pylon.node.role"] == "lm"]
    assert len(lm_spans) == 2
    for s in lm_spans:
        assert s.name.startswith("chat ") and s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.provider.name"] == "pylon" and s.attributes["gen_ai.request.model"]
        assert s.attributes["gen_ai.usage.input_tokens"] > 0 and s.attributes["gen_ai.usage.output_tokens"] > 0
        assert by_node[s.attributes["pylon.node.id"]].parent is not None


def test_errors_and_the_otlp_json_file(chat_double, tmp_path):
    graph = recorded(chat_double)
    failing = next(n for n in graph.nodes if n.signature == "question -> summary")
    failing.error = "ValueError: boom"
    path = tmp_path / "trace.otlp.json"
    assert write_otlp_json(graph, path) == len(graph.nodes)
    doc = json.loads(path.read_text().splitlines()[0])
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    ids = {s["spanId"] for s in spans}
    roots = [s for s in spans if "parentSpanId" not in s]
    assert len(roots) == 1 and all(s["parentSpanId"] in ids for s in spans if s is not roots[0])
    bad = next(s for s in spans if {"key": "pylon.node.id", "value": {"stringValue": failing.id}} in s["attributes"])
    assert bad["status"] == {"code": 2, "message": "ValueError: boom"}
    assert {"key": "error.type", "value": {"stringValue": "ValueError"}} in bad["attributes"]


def test_trace_otel_cli(chat_double, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    local = tmp_path / "run.json"
    recorded(chat_double).save(local)
    out = tmp_path / "spans.json"
    res = CliRunner().invoke(app, ["trace", "otel", str(local), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "spans ->" in res.output and json.loads(out.read_text())["resourceSpans"]
    both = CliRunner().invoke(app, ["trace", "otel", str(local)])
    assert both.exit_code != 0 and "--output" in both.output and "Traceback" not in both.output
