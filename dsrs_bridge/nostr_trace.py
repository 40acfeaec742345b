"""Graph <-> signed Nostr events: a trace you can publish, fetch back and read as a thread.

Every node becomes one signed event, built parents-first so each can reference its
parents' event ids. The kind is TRACE_KIND (3571, a regular kind of Pylon's, with a NIP-31
`alt` tag saying what it is) by default, so a published run stays off the author's
followers' timelines; `kind=TEXT_NOTE` (1) still publishes the trace as a thread of
notes, and readers accept both (TRACE_KINDS):

- content: one human line (Root: the run's summary — program, nodes, tokens, msats,
  duration; others: what the node did), so any Nostr client shows the trace as a thread;
- ["t", "pylon-trace"], ["trace", <trace id>], ["node", <node id>, <kind>, <role>],
  ["alt", "Pylon program trace node: ..."] (NIP-31);
- ["meta", <JSON>]: the node's metadata without prompt/output text, which makes
  `fetch_trace` an exact round trip of structure and metadata;
- edges as NIP-10 `e` tags: ["e", <root event>, "", "root"] on every node,
  ["e", <call parent>, "", "reply"] when the caller is not the root, and
  ["e", <data parent>, "", "mention"] per dataflow edge — the edges the Rust port's
  Nostr mapping dropped;
- a Predict whose LM call ran over the swarm references its kind-5050 job by event
  id (["q", <job id>] and ["job", <job id>, <provider>, <msat>]); the job request is
  never published again — a new 5050 would be executed and billed by providers.

Privacy: prompts and outputs travel as sha256 + length (inside "meta"). With
`include_content=True` the text goes into a ["content", "plain", JSON] tag, or, with
`encrypt_to=<pubkey>`, into ["content", "nip44", <payload>, <recipient>] encrypted
with NIP-44 v2 so only that key (and the author) can read it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, Sequence

from dsrs_bridge.graph import Edge, Graph, Node, TraceFormatError
from pylon.nostr.errors import InvalidEvent
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys, normalize_pubkey
from pylon.nostr.kinds import TEXT_NOTE

log = logging.getLogger(__name__)

TRACE_TOPIC = "pylon-trace"
TRACE_KIND = 3571  # regular (stored), not a text note: see docs/PROTOCOL.md "Program traces"
TRACE_KINDS = (TRACE_KIND, TEXT_NOTE)  # what readers accept: the dedicated kind and the old kind-1 notes
ALT_PREFIX = "Pylon program trace node: "
FIELD_CONTENT_BUDGET = 16 * 1024  # bytes of text per field when content is published
_FETCH_PAGE = 500  # what careful relays clamp `limit` to


# -- human lines ----------------------------------------------------------------------------
def _seconds(us: int | None) -> str:
    return f"{us / 1e6:.3f} s" if us is not None else "? s"


def summary_line(graph: Graph) -> str:
    prompt, completion = graph.total_tokens()
    root = graph.root
    line = (f"Pylon trace · {graph.program or root.name} · {len(graph.nodes)} nodes · "
            f"{prompt + completion} tokens ({prompt} in, {completion} out) · "
            f"{graph.total_msat()} msat · {_seconds(root.duration_us)}")
    if root.error:
        line += f" · error: {root.error}"
    return line


def node_facts(node: Node, graph: Graph | None = None, *, origin_us: int | None = None) -> list[str]:
    """What one node did, as short plain-text facts: start offset from `origin_us` (when
    given), duration, tokens, msat, cached, jobs, data mappings. The one formatter behind
    both the trace events' content (node_line) and `pylon trace show` (which adds colour)."""
    facts: list[str] = []
    if node.started_at_us is not None and origin_us is not None and node.kind != "Root":
        facts.append(f"+{(node.started_at_us - origin_us) / 1e6:.3f} s")
    if node.duration_us is not None and node.kind != "Map":
        facts.append(_seconds(node.duration_us))
    if node.prompt_tokens is not None or node.completion_tokens is not None:
        facts.append(f"{node.prompt_tokens or 0}+{node.completion_tokens or 0} tokens")
    if node.paid_msat is not None:
        facts.append(f"{node.paid_msat} msat")
    if node.cache_hit:
        facts.append("cached")
    for job in node.jobs:
        facts.append(f"job {job.event_id[:12]}…")
    if node.mappings:
        names = {n.id: n.name for n in graph.nodes} if graph else {}
        facts.append("; ".join(
            f"{names.get(m.target, m.target[:8])}.{m.target_field} <- {names.get(m.source, m.source[:8])}.{m.source_field}"
            for m in node.mappings))
    return facts


def node_line(node: Node, graph: Graph | None = None) -> str:
    """One node as one line of plain text (a trace event's content)."""
    parts = [f"{node.kind}/{node.role} {node.name}".strip()]
    if node.signature:
        parts.append(f"({node.signature})")
    extra = node_facts(node, graph)
    if node.error:
        extra.append(f"error: {node.error}")
    return " · ".join([" ".join(parts), *extra])


# -- Graph -> events --------------------------------------------------------------------------
def _content_blob(node: Node) -> dict[str, Any] | None:
    def side(payloads):
        out = {}
        for name, p in payloads.items():
            if p.content is None:
                continue
            text = p.content
            if len(text.encode("utf-8")) > FIELD_CONTENT_BUDGET:
                text = text.encode("utf-8")[:FIELD_CONTENT_BUDGET].decode("utf-8", "ignore")
                out[name] = {"text": text, "truncated": True}
            else:
                out[name] = {"text": text}
        return out

    inputs, outputs = side(node.inputs), side(node.outputs)
    if not inputs and not outputs:
        return None
    return {"inputs": inputs, "outputs": outputs}


def _created_at(node: Node, fallback: int) -> int:
    if node.started_at_us is None:
        return fallback
    return min(node.started_at_us // 1_000_000, int(time.time()))


def graph_to_nostr_events(
    graph: Graph,
    keys: Keys,
    *,
    include_content: bool = False,
    encrypt_to: str | None = None,
    kind: int = TRACE_KIND,
) -> list[Event]:
    """Signed events for every node, parents first (the Root's event is first): kind
    TRACE_KIND by default, or TEXT_NOTE to show the trace as a thread in social clients."""
    from pylon.nostr.crypto import encrypt_to as nip44_encrypt_to

    if kind not in TRACE_KINDS:
        raise ValueError(f"a trace is published as kind {TRACE_KIND} or {TEXT_NOTE}, not {kind}")
    graph.validate()
    recipient = normalize_pubkey(encrypt_to) if encrypt_to else None
    now = int(time.time())
    event_ids: dict[str, str] = {}
    events: list[Event] = []
    root = graph.root
    for position, node in enumerate(graph.nodes):
        tags: list[list[str]] = [
            ["t", TRACE_TOPIC],
            ["trace", graph.trace_id],
            ["node", node.id, node.kind, node.role, str(position)],
        ]
        meta = node.to_dict(with_content=False)
        if node.kind == "Root":
            meta["graph"] = {"program": graph.program, "source": graph.source, "attrs": dict(graph.attrs),
                             "nodes": len(graph.nodes), "edges": len(graph.edges)}
            prompt, completion = graph.total_tokens()
            tags += [["program", graph.program], ["tokens", str(prompt), str(completion)],
                     ["msat", str(graph.total_msat())],
                     # one id per publication: republishing a run (say with include_content=True)
                     # makes a new root, never a second set of nodes under the old one
                     ["publication", secrets.token_hex(8)]]
            content = summary_line(graph)
        else:
            tags.append(["e", event_ids[root.id], "", "root"])
            call_parent = graph.call_parent(node.id)
            if call_parent is not None and call_parent != root.id:
                tags.append(["e", event_ids[call_parent], "", "reply"])
            for parent in graph.parents(node.id, "data"):
                tags.append(["e", event_ids[parent], "", "mention"])
            content = node_line(node, graph)
        if node.model:
            tags.append(["model", node.model])
        for job in node.jobs:
            tags.append(["q", job.event_id])
            tags.append(["job", job.event_id, job.provider or "", str(job.paid_msat)])
        tags.append(["meta", json.dumps(meta, separators=(",", ":"), ensure_ascii=False, sort_keys=True)])
        if include_content:
            blob = _content_blob(node)
            if blob is not None:
                text = json.dumps(blob, separators=(",", ":"), ensure_ascii=False)
                if recipient:
                    tags.append(["content", "nip44", nip44_encrypt_to(keys, recipient, text), recipient])
                else:
                    tags.append(["content", "plain", text])
        tags.append(["alt", ALT_PREFIX + content[:200]])
        event = Event.build(keys, kind, content, tags, created_at=_created_at(node, now))
        event_ids[node.id] = event.id
        events.append(event)
    return events


# -- events -> Graph --------------------------------------------------------------------------
def _tag(event: Event, name: str) -> list[str] | None:
    return event.first_tag(name)


def _apply_content(node: Node, tag: list[str], author: str, keys: Keys | None) -> None:
    from pylon.nostr.crypto import decrypt_from

    if len(tag) < 3:
        raise TraceFormatError(f"node {node.id!r}: malformed content tag")
    if tag[1] == "plain":
        text = tag[2]
    elif tag[1] == "nip44":
        recipient = tag[3] if len(tag) > 3 else ""
        if keys is None or keys.public_key not in (recipient, author):
            return  # encrypted for someone else: metadata only
        peer = recipient if keys.public_key == author else author
        text = decrypt_from(keys, peer, tag[2])
    else:
        raise TraceFormatError(f"node {node.id!r}: unknown content encoding {tag[1]!r}")
    try:
        blob = json.loads(text)
    except ValueError:
        raise TraceFormatError(f"node {node.id!r}: content is not JSON") from None
    for side, payloads in (("inputs", node.inputs), ("outputs", node.outputs)):
        for name, entry in (blob.get(side) or {}).items():
            if name in payloads and isinstance(entry, dict) and isinstance(entry.get("text"), str):
                if not entry.get("truncated"):
                    payloads[name].content = entry["text"]
                else:
                    payloads[name].content = None


def events_to_graph(events: Sequence[Event], root_event_id: str, *, keys: Keys | None = None) -> Graph:
    """Rebuild the Graph from a trace's events (any order; others' events are ignored)."""
    by_id = {e.id: e for e in events}
    root_event = by_id.get(root_event_id)
    if root_event is None:
        raise TraceFormatError(f"the trace's root event {root_event_id} is not among the events")
    trace_tag, root_node_tag = _tag(root_event, "trace"), _tag(root_event, "node")
    if (root_event.kind not in TRACE_KINDS or TRACE_TOPIC not in root_event.tag_values("t") or not trace_tag
            or len(trace_tag) < 2 or not root_node_tag or len(root_node_tag) < 3 or root_node_tag[2] != "Root"):
        raise TraceFormatError(f"event {root_event_id} is not a Pylon trace root")
    trace_id, author = trace_tag[1], root_event.pubkey
    mine = [e for e in events if e.pubkey == author and e.kind == root_event.kind
            and (_tag(e, "trace") or ["", ""])[1] == trace_id and _tag(e, "node")]
    for e in mine:
        try:
            e.verify()
        except InvalidEvent as exc:
            raise TraceFormatError(f"trace event {e.id} is not validly signed: {exc}") from None
    node_of_event: dict[str, Node] = {}
    graph_meta: dict[str, Any] = {}
    for e in mine:
        node_tag, meta_tag = _tag(e, "node"), _tag(e, "meta")
        if meta_tag is None or node_tag is None or len(meta_tag) < 2 or len(node_tag) < 4:
            raise TraceFormatError(f"trace event {e.id} lacks its node or meta tag")
        try:
            meta = json.loads(meta_tag[1])
        except ValueError:
            raise TraceFormatError(f"trace event {e.id}: meta is not JSON") from None
        if not isinstance(meta, dict):
            raise TraceFormatError(f"trace event {e.id}: meta must be an object")
        extra = meta.pop("graph", None)
        node = Node.from_dict(meta)
        if [node.id, node.kind, node.role] != node_tag[1:4]:
            raise TraceFormatError(f"trace event {e.id}: node tag disagrees with its metadata")
        if node.kind == "Root":
            if e.id != root_event_id:
                continue  # a different run's root that reused the trace id: not ours
            graph_meta = extra if isinstance(extra, dict) else {}
        content = _tag(e, "content")
        if content is not None:
            _apply_content(node, content, author, keys)
        node_of_event[e.id] = node
    def position(node: Node) -> tuple[int, int]:
        tag = _tag(by_id[event_of_node[node.id]], "node") or []
        return (int(tag[4]), 0) if len(tag) > 4 and tag[4].isdigit() else (1 << 62, 0)

    event_of_node = {n.id: eid for eid, n in node_of_event.items()}
    nodes = sorted(node_of_event.values(), key=position)
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise TraceFormatError("two trace events claim the same node id")
    root_node = node_of_event[root_event_id]
    edges: list[Edge] = []
    missing: set[str] = set()
    for event_id, node in node_of_event.items():
        if event_id == root_event_id:
            continue
        marked: dict[str, list[str]] = {"root": [], "reply": [], "mention": []}
        for t in event_by_id_tags(by_id[event_id]):
            marked.setdefault(t[3], []).append(t[1])
        if marked["root"] != [root_event_id]:
            raise TraceFormatError(f"trace event {event_id} does not point at the trace root")
        call = marked["reply"] or marked["root"]
        for parent_id in call[:1]:
            if parent_id not in node_of_event:
                missing.add(parent_id)
                continue
            edges.append(Edge(node_of_event[parent_id].id, node.id, "call"))
        for parent_id in marked["mention"]:
            if parent_id not in node_of_event:
                missing.add(parent_id)
                continue
            edges.append(Edge(node_of_event[parent_id].id, node.id, "data"))
    if missing:
        raise TraceFormatError(f"the trace is incomplete: {len(missing)} parent event(s) were not found on the relays")
    attrs = graph_meta.get("attrs", {})
    graph = Graph(trace_id=trace_id, program=str(graph_meta.get("program", root_node.name)),
                  source=str(graph_meta.get("source", "dspy")), nodes=nodes, edges=edges,
                  attrs={str(k): str(v) for k, v in attrs.items()} if isinstance(attrs, dict) else {})
    expected = graph_meta.get("nodes")
    if isinstance(expected, int) and expected != len(nodes):
        raise TraceFormatError(f"the trace is incomplete: {len(nodes)} of {expected} node events were found")
    try:
        graph.validate()  # the publisher's order, when the events carry it
    except TraceFormatError:
        graph.sort_topologically()
        graph.validate()
    graph.normalize()
    return graph


def event_by_id_tags(event: Event) -> list[list[str]]:
    """The event's marked `e` tags, padded to [e, id, relay, marker]."""
    out = []
    for t in event.tags:
        if len(t) >= 2 and t[0] == "e":
            padded = (t + ["", ""])[:4]
            out.append(padded)
    return out


# -- relays ------------------------------------------------------------------------------------
async def publish_events(events: Sequence[Event], relays: Sequence[str] | None = None, *,
                         keys: Keys | None = None, pool: Any = None) -> None:
    """Publish in order (parents first), each accepted by at least one relay."""
    from pylon.relay.pool import RelayPool

    if pool is not None:
        for event in events:
            await pool.publish(event)
        return
    async with RelayPool(list(relays or []), keys=keys) as own:
        await own.wait_connected(fail_fast=True)  # a refused relay is said at once
        for event in events:
            await own.publish(event)


async def publish_trace(graph: Graph, relays: Sequence[str] | None, keys: Keys, *,
                        include_content: bool = False, encrypt_to: str | None = None,
                        pool: Any = None, kind: int = TRACE_KIND) -> str:
    """Sign and publish the trace; returns the root event id (what `fetch_trace` takes)."""
    events = graph_to_nostr_events(graph, keys, include_content=include_content, encrypt_to=encrypt_to,
                                   kind=kind)
    await publish_events(events, relays, keys=keys, pool=pool)
    log.info("published trace %s as %d events, root %s", graph.trace_id, len(events), events[0].id)
    return events[0].id


async def fetch_trace(root_event_id: str, relays: Sequence[str] | None = None, *, keys: Keys | None = None,
                      timeout: float = 10.0, pool: Any = None) -> Graph:
    """Fetch a trace by its root event id and rebuild the Graph; `keys` decrypts content
    that was encrypted to them. Only events signed by the root's author count."""
    from pylon.nostr.filters import Filter
    from pylon.relay.pool import RelayPool

    if len(root_event_id) != 64 or any(c not in "0123456789abcdef" for c in root_event_id):
        raise TraceFormatError("a trace is named by its root event id: 64 lowercase hex characters")

    async def run(p) -> Graph:
        found = await p.query([Filter.of(ids=[root_event_id])], timeout=timeout)
        root = next((e for e in found if e.id == root_event_id), None)
        if root is None:
            raise TraceFormatError(f"no relay has the trace root event {root_event_id}")
        collected: dict[str, Event] = {root.id: root}
        until: int | None = None
        while True:
            fields: dict[str, Any] = {"kinds": [root.kind], "authors": [root.pubkey], "e": [root_event_id],
                                      "limit": _FETCH_PAGE}
            if until is not None:
                fields["until"] = until
            page = await p.query([Filter.of(**fields)], timeout=timeout)
            fresh = [e for e in page if e.id not in collected]
            for e in page:
                collected[e.id] = e
            if len(page) < _FETCH_PAGE or not fresh:
                break
            until = min(e.created_at for e in page)
        return events_to_graph(list(collected.values()), root_event_id, keys=keys)

    if pool is not None:
        return await run(pool)
    async with RelayPool(list(relays or []), keys=keys) as own:
        await own.wait_connected(fail_fast=True)  # a refused relay is said at once
        return await run(own)
