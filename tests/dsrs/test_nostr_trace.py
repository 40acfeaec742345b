"""Graph <-> Nostr events: the mapping per node kind, NIP-10 edges, privacy, and the
publish/fetch round trip on a real relay (the embedded nexus relay, or PYLON_TEST_RELAY)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsrs_bridge.dsrs_import import import_dsrs_jsonl
from dsrs_bridge.graph import Graph, Node, TraceFormatError
from dsrs_bridge.nostr_trace import (TRACE_KIND, events_to_graph, fetch_trace, graph_to_nostr_events,
                                     publish_trace)
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

from test_graph import sample_graph

FIXTURE = Path(__file__).parent / "data" / "qa_pipeline.dsrs.jsonl"


def by_node(events: list[Event]) -> dict[str, Event]:
    return {e.first_tag("node")[1]: e for e in events}


def e_tags(event: Event) -> list[tuple[str, str]]:
    return [(t[1], t[3]) for t in event.tags if t[0] == "e"]


def test_every_node_is_a_signed_trace_event_built_parents_first():
    g, keys = sample_graph(), Keys.generate()
    events = graph_to_nostr_events(g, keys)
    assert [e.first_tag("node")[1] for e in events] == [n.id for n in g.nodes]
    # off the social timeline: the dedicated regular kind, each with a NIP-31 alt description
    assert all(e.kind == TRACE_KIND == 3571 and e.is_valid() and e.pubkey == keys.public_key for e in events)
    assert all(e.tag_values("t") == ["pylon-trace"] and e.tag_values("trace") == ["t1"] for e in events)
    assert all(e.first_tag("alt")[1].startswith("Pylon program trace node: ") for e in events)
    seen: set[str] = set()
    for e in events:  # every referenced parent was built earlier
        for ref, marker in e_tags(e):
            assert ref in seen, marker
        seen.add(e.id)


def test_root_summarises_the_run():
    g = sample_graph()
    root = graph_to_nostr_events(g, Keys.generate())[0]
    assert root.content.startswith("Pylon trace · prog · 6 nodes · 15 tokens (10 in, 5 out) · 42 msat · 0.008 s")
    assert root.first_tag("msat") == ["msat", "42"] and root.first_tag("tokens") == ["tokens", "10", "5"]
    assert not e_tags(root)


def test_nip10_markers_carry_call_and_data_edges():
    g = sample_graph()
    events = graph_to_nostr_events(g, Keys.generate())
    ev = by_node(events)
    root_id = ev["r"].id
    assert e_tags(ev["m"]) == [(root_id, "root")]  # direct child of the root: root marker only
    assert e_tags(ev["p1"]) == [(root_id, "root"), (ev["m"].id, "reply")]
    # the Map node: called inside the module, fed by p1; p2 is fed by the Map
    assert e_tags(ev["map-p2"]) == [(root_id, "root"), (ev["m"].id, "reply"), (ev["p1"].id, "mention")]
    assert (ev["map-p2"].id, "mention") in e_tags(ev["p2"])
    meta = json.loads(ev["map-p2"].first_tag("meta")[1])
    assert meta["mappings"] == [{"target": "p2", "target_field": "summary", "source": "p1", "source_field": "summary"}]
    assert "summary <- inner.summarize.summary" in ev["map-p2"].content


def test_swarm_predict_references_its_job_and_never_republishes_it():
    g = sample_graph()
    events = graph_to_nostr_events(g, Keys.generate())
    lm = by_node(events)["l1"]
    assert lm.kind == TRACE_KIND and all(e.kind != 5050 for e in events)
    assert lm.tag_values("q") == ["a" * 64]
    assert lm.first_tag("job") == ["job", "a" * 64, "b" * 64, "42"]
    assert lm.first_tag("model") == ["model", "pylon/tiny"]
    assert "42 msat" in lm.content and "job aaaaaaaaaaaa" in lm.content


def test_operator_events_carry_their_metadata_in_tags():
    events = graph_to_nostr_events(sample_graph(), Keys.generate())
    mod = by_node(events)["m"]
    assert mod.first_tag("node") == ["node", "m", "Operator", "module", "1"]
    assert json.loads(mod.first_tag("meta")[1])["name"] == "Outer"


def test_content_is_hidden_by_default():
    g = sample_graph()
    events = graph_to_nostr_events(g, Keys.generate())
    blob = json.dumps([e.to_dict() for e in events])
    assert "what?" not in blob
    meta = json.loads(by_node(events)["p1"].first_tag("meta")[1])
    assert meta["inputs"]["question"] == {"sha256": g.node("p1").inputs["question"].sha256, "length": 5}
    assert all(e.first_tag("content") is None for e in events)


def test_content_on_request_plain_and_encrypted_to_the_owner():
    g = sample_graph()
    author, owner, stranger = Keys.generate(), Keys.generate(), Keys.generate()
    plain = graph_to_nostr_events(g, author, include_content=True)
    assert by_node(plain)["p1"].first_tag("content")[1] == "plain"
    assert events_to_graph(plain, plain[0].id).to_dict() == g.to_dict()

    sealed = graph_to_nostr_events(g, author, include_content=True, encrypt_to=owner.npub)
    tag = by_node(sealed)["p1"].first_tag("content")
    assert tag[1] == "nip44" and tag[3] == owner.public_key and "what?" not in json.dumps(tag)
    assert events_to_graph(sealed, sealed[0].id, keys=owner).to_dict() == g.to_dict()
    assert events_to_graph(sealed, sealed[0].id, keys=author).to_dict() == g.to_dict()
    # anyone else gets the metadata, not the text
    other = events_to_graph(sealed, sealed[0].id, keys=stranger)
    assert other.to_dict(with_content=False) == g.to_dict(with_content=False)
    assert other.node("p1").inputs["question"].content is None


def test_offline_round_trip_of_a_dsrs_import_in_any_order():
    g = import_dsrs_jsonl(FIXTURE)
    events = graph_to_nostr_events(g, Keys.generate())
    back = events_to_graph(list(reversed(events)), events[0].id)
    assert back.to_dict(with_content=False) == g.to_dict(with_content=False)


def test_foreign_and_broken_events_are_refused_or_ignored():
    g, keys = sample_graph(), Keys.generate()
    events = graph_to_nostr_events(g, keys)
    # someone else's note replying into the thread is not part of the trace
    intruder = Event.build(Keys.generate(), 1, "hi", [["t", "pylon-trace"], ["trace", "t1"],
                                                     ["node", "x", "Operator", "module", "9"],
                                                     ["e", events[0].id, "", "root"], ["meta", "{}"]])
    assert events_to_graph([*events, intruder], events[0].id).to_dict(with_content=False) == \
        g.to_dict(with_content=False)
    with pytest.raises(TraceFormatError, match="incomplete"):
        events_to_graph([e for e in events if e.first_tag("node")[1] != "m"], events[0].id)
    with pytest.raises(TraceFormatError, match="not a Pylon trace root"):
        events_to_graph(events, events[1].id)
    tampered = Event.from_dict({**events[2].to_dict(), "content": "changed"})
    with pytest.raises(TraceFormatError, match="not validly signed"):
        events_to_graph([events[0], events[1], tampered], events[0].id)


def test_events_need_a_valid_graph():
    g = sample_graph()
    g.nodes.append(Node("orphan", "Operator", "module"))
    with pytest.raises(TraceFormatError):
        graph_to_nostr_events(g, Keys.generate())


async def test_publish_and_fetch_round_trip_on_a_relay(relay_url):
    g = sample_graph()
    keys = Keys.generate()
    root_id = await publish_trace(g, [relay_url], keys)
    back = await fetch_trace(root_id, [relay_url])
    assert back.to_dict(with_content=False) == g.to_dict(with_content=False)


async def test_kind_1_notes_on_request_and_both_kinds_read_back(relay_url):
    g, keys = sample_graph(), Keys.generate()
    notes = graph_to_nostr_events(g, keys, kind=1)
    assert all(e.kind == 1 for e in notes)
    with pytest.raises(ValueError):
        graph_to_nostr_events(g, keys, kind=5050)
    as_notes = await publish_trace(g, [relay_url], keys, kind=1)
    as_traces = await publish_trace(g, [relay_url], keys)
    for root_id in (as_notes, as_traces):  # same author, same trace id: each read stays within its kind
        back = await fetch_trace(root_id, [relay_url])
        assert back.to_dict(with_content=False) == g.to_dict(with_content=False)


async def test_publish_and_fetch_a_dsrs_trace_with_encrypted_content(relay_url):
    g = import_dsrs_jsonl(FIXTURE)
    keys = Keys.generate()
    root_id = await publish_trace(g, [relay_url], keys, include_content=True, encrypt_to=keys.public_key)
    back = await fetch_trace(root_id, [relay_url], keys=keys)
    assert back.to_dict() == g.to_dict()
    hidden = await fetch_trace(root_id, [relay_url])
    assert hidden.node("span-1").outputs["answer"].content is None


async def test_fetching_an_unknown_trace_is_a_typed_error(relay_url):
    with pytest.raises(TraceFormatError, match="no relay has"):
        await fetch_trace("f" * 64, [relay_url], timeout=3)
    with pytest.raises(TraceFormatError, match="64 lowercase hex"):
        await fetch_trace("nope", [relay_url])


async def test_republishing_a_run_makes_a_new_trace_each_time(relay_url):
    """The same graph published twice, the second time with content: two roots, both fetch back."""
    g, keys = sample_graph(), Keys.generate()
    first = await publish_trace(g, [relay_url], keys)
    second = await publish_trace(g, [relay_url], keys, include_content=True)
    assert first != second
    for root_id in (first, second):
        back = await fetch_trace(root_id, [relay_url])
        assert [n.id for n in back.nodes] == [n.id for n in g.nodes]
