"""Import of the Rust port's JSONL trace (format version 1).

The fixture tests/dsrs/data/qa_pipeline.dsrs.jsonl was written by hand following
krypticmouse/DSRs, crates/dspy-rs/src/trace/serialize.rs (`Trace::to_jsonl`: header
line {"h", "components", "models", "prefixes"}, one line per Span, footer {"f"}) and
crates/dspy-rs/src/trace/span.rs (Span, SpanEvent tagged by "t" in snake_case with
`exchange` / `tool_run`, SpanError {kind, message}, LmUsage, ModelEntry {config,
config_hash}, TraceMeta, TraceOutcome). It includes an event tag from a "newer
writer" (`future_event`), which readers must skip.
"""

from __future__ import annotations

import json

import pytest

from dsrs_bridge.dsrs_import import import_dsrs_jsonl
from dsrs_bridge.graph import Graph, Payload, TraceFormatError, iter_tree

from pathlib import Path

FIXTURE = Path(__file__).parent / "data" / "qa_pipeline.dsrs.jsonl"


def test_fixture_imports_into_the_shared_vocabulary():
    g = import_dsrs_jsonl(FIXTURE)
    assert g.source == "dsrs" and g.program == "qa_pipeline" and g.trace_id == "01JDSRS0TRACE0FIXTURE00001"
    tree = [(d, n.kind, n.role, n.name) for d, n in iter_tree(g)]
    assert tree == [
        (0, "Root", "program", "qa_pipeline"),
        (1, "Predict", "span", "pipeline.retrieve_query"),
        (2, "Predict", "exchange", "openai:tiny-llama"),
        (1, "Predict", "span", "pipeline.answer"),
        (2, "Predict", "exchange", "openai:tiny-llama"),
        (2, "Operator", "tool", "search"),
        (2, "Predict", "exchange", "openai:tiny-llama"),
        (2, "Predict", "span", "pipeline.answer.verifier"),
        (3, "Predict", "exchange", "openai:tiny-llama"),
    ]
    # spans carry the usage; exchanges are not counted twice
    assert g.total_tokens() == (40 + 140 + 12, 6 + 12 + 1)
    root = g.root
    assert root.duration_us == 700_000 and root.attrs["eval.score"] == "1.0"
    assert root.outputs["answer"] == Payload.of("Paris", keep=True)
    verifier = next(n for n in g.nodes if n.name == "pipeline.answer.verifier")
    assert verifier.error == "parse: missing field `verdict`"
    answer = next(n for n in g.nodes if n.name == "pipeline.answer")
    assert answer.input_fields == ["question", "query"] and answer.model == "openai:tiny-llama"
    assert answer.started_at_us == 1763712000260000 and answer.duration_us == 400_000
    tool = next(n for n in g.nodes if n.role == "tool")
    assert tool.attrs["duration_us"] == "1200" and tool.outputs["result"].content == "Paris is the capital of France."


def test_content_can_be_left_out_at_import():
    g = import_dsrs_jsonl(FIXTURE, capture_content=False)
    assert all(p.content is None for n in g.nodes for p in [*n.inputs.values(), *n.outputs.values()])
    assert Graph.from_json(g.to_json()).to_dict() == g.to_dict()


def _lines() -> list[str]:
    return FIXTURE.read_text().splitlines()


def test_newer_format_version_is_refused(tmp_path):
    lines = _lines()
    header = json.loads(lines[0])
    header["h"]["v"] = 2
    path = tmp_path / "v2.jsonl"
    path.write_text("\n".join([json.dumps(header), *lines[1:]]))
    with pytest.raises(TraceFormatError, match="newer than supported"):
        import_dsrs_jsonl(path)


@pytest.mark.parametrize("bad, message", [
    ("", "empty"),
    ("[1,2]\n", "JSON object"),
    ('{"x": 1}\n', "no \"h\" header"),
    ('{"h": {"v": 1, "trace_id": "t", "started_at_us": 1}, "components": []}\n{"id": 0, "component": 3, "seq": 0, "started_at_us": 1}\n', "component 3"),
    ('{"h": {"v": 1, "trace_id": "t", "started_at_us": 1}, "components": ["a"]}\n{"id": 0, "component": 0, "parent": 5, "started_at_us": 1}\n', "parent span"),
    ('{"h": {"v": 1, "trace_id": "t", "started_at_us": 1}, "components": ["a"]}\nnot json\n', "not JSON"),
])
def test_malformed_traces_get_typed_errors(tmp_path, bad, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(bad)
    with pytest.raises(TraceFormatError, match=message):
        import_dsrs_jsonl(path)


def test_draft_links_become_data_edges(tmp_path):
    lines = _lines()
    span = json.loads(lines[2])
    span["links"] = [0]
    path = tmp_path / "links.jsonl"
    path.write_text("\n".join([lines[0], lines[1], json.dumps(span), *lines[3:]]))
    g = import_dsrs_jsonl(path)
    assert g.parents("span-1", "data") == ["span-0"]
