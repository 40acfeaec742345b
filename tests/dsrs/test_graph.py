"""Graph / Node / Edge: JSON round trip and the structural checks every producer relies on."""

from __future__ import annotations

import json

import pytest

from dsrs_bridge.graph import Edge, FieldMapping, Graph, JobRef, Node, Payload, TraceFormatError, iter_tree


def sample_graph() -> Graph:
    root = Node("r", "Root", "program", "prog", started_at_us=1_000, ended_at_us=9_000)
    mod = Node("m", "Operator", "module", "Outer", started_at_us=1_100, ended_at_us=8_900)
    p1 = Node("p1", "Predict", "predictor", "inner.summarize", signature="question -> summary",
              input_fields=["question"], output_fields=["summary"], started_at_us=1_200, ended_at_us=3_000,
              inputs={"question": Payload.of("what?", keep=True)}, outputs={"summary": Payload.of("s")})
    lm = Node("l1", "Predict", "lm", "pylon/tiny", model="pylon/tiny", prompt_tokens=10, completion_tokens=5,
              paid_msat=42, jobs=[JobRef("a" * 64, "b" * 64, 42)], started_at_us=1_300, ended_at_us=2_900)
    mp = Node("map-p2", "Map", "lineage", "answer <- inner.summarize", started_at_us=3_100, ended_at_us=3_100,
              mappings=[FieldMapping("p2", "summary", "p1", "summary")])
    p2 = Node("p2", "Predict", "predictor", "answer", started_at_us=3_100, ended_at_us=8_000,
              error="ValueError: boom", attrs={"demos": "0"})
    g = Graph(trace_id="t1", program="prog", nodes=[root, mod, p1, lm, mp, p2],
              edges=[Edge("r", "m"), Edge("m", "p1"), Edge("p1", "l1"), Edge("m", "map-p2"),
                     Edge("p1", "map-p2", "data"), Edge("m", "p2"), Edge("map-p2", "p2", "data")])
    g.normalize()
    g.validate()
    return g


def test_json_round_trip_is_exact():
    g = sample_graph()
    again = Graph.from_json(g.to_json())
    assert again.to_dict() == g.to_dict()
    assert again.node("l1").jobs[0].paid_msat == 42
    assert again.node("p1").inputs["question"].content == "what?"
    assert again.total_msat() == 42 and again.total_tokens() == (10, 5)
    assert again.duration_us() == 8_000


def test_without_content_keeps_hash_and_length_only():
    g = sample_graph()
    data = g.to_dict(with_content=False)
    q = data["nodes"][2]["inputs"]["question"]
    assert q == {"sha256": Payload.of("what?").sha256, "length": 5}
    assert "what?" not in json.dumps(data)


def test_tree_walk_follows_call_edges_in_start_order():
    names = [(d, n.id) for d, n in iter_tree(sample_graph())]
    assert names == [(0, "r"), (1, "m"), (2, "p1"), (3, "l1"), (2, "map-p2"), (2, "p2")]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["nodes"][1].update(kind="Loop"), "kind must be one of"),
    (lambda d: d["edges"].append({"parent": "zz", "child": "p1", "kind": "data"}), "unknown node"),
    (lambda d: d["edges"].append({"parent": "p2", "child": "p1", "kind": "data"}), "topological"),
    (lambda d: d["edges"].append({"parent": "r", "child": "p1", "kind": "call"}), "exactly one call parent"),
    (lambda d: d["nodes"].append(dict(d["nodes"][1])), "unique"),
    (lambda d: d.update(v=99), "not supported"),
    (lambda d: d.update(format="other"), "not a Pylon trace graph"),
    (lambda d: d["nodes"][3].update(paid_msat=-1), "non-negative"),
    (lambda d: d["nodes"][3]["jobs"][0].update(event_id="xyz"), "64-hex"),
])
def test_malformed_graphs_are_refused_with_a_typed_error(mutate, message):
    data = sample_graph().to_dict()
    mutate(data)
    with pytest.raises(TraceFormatError, match=message):
        Graph.from_dict(data)


def test_not_json_is_a_typed_error():
    with pytest.raises(TraceFormatError):
        Graph.from_json("{nope")


def test_topological_sort_repairs_order_and_detects_cycles():
    g = sample_graph()
    g.nodes.reverse()
    g.sort_topologically()
    g.validate()
    assert g.nodes[0].id == "r"
    g.edges.append(Edge("p2", "p1", "data"))
    with pytest.raises(TraceFormatError, match="cycle"):
        g.sort_topologically()
