"""The execution DAG of one program run: nodes, edges and their JSON form.

One data model serves three producers and two consumers: the DSPy recorder
(`recorder.py`), the dsrs JSONL importer (`dsrs_import.py`) and the Nostr fetcher
(`nostr_trace.fetch_trace`) build a `Graph`; the Nostr publisher and `pylon trace`
read one. The node kinds are the Rust port's vocabulary (dsrs `trace::NodeType`):
Root (the run), Predict (an LM call through a predictor), Operator (any other
logic: modules, tools, adapters) and Map (field-level lineage between nodes).

Times are integer microseconds since the epoch (as dsrs writes them) so that
JSON and Nostr tags carry them exactly; money is integer millisats.
Prompts and outputs are kept as `Payload`s: a sha256 and a length always, the
text itself only when the recorder was asked to capture content.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from pylon.errors import PylonError

NodeKind = Literal["Root", "Predict", "Operator", "Map"]
NODE_KINDS: tuple[str, ...] = ("Root", "Predict", "Operator", "Map")
EdgeKind = Literal["call", "data"]
EDGE_KINDS: tuple[str, ...] = ("call", "data")
GRAPH_FORMAT = "pylon-trace-graph"
GRAPH_VERSION = 1


class TraceFormatError(PylonError):
    """A trace file or trace event set is malformed (bad JSON, unknown kind, dangling edge)."""

    exit_code = 2


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_text(value: Any) -> str:
    """A stable text form of any recorded value (strings as-is, the rest as sorted JSON)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError):
        return repr(value)


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump()
        except Exception:  # pragma: no cover - defensive: fall back to repr
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "toDict"):
        return value.toDict()
    return repr(value)


@dataclass(slots=True)
class Payload:
    """A recorded value: always its sha256 and length, its text only when captured."""

    sha256: str
    length: int
    content: str | None = None

    @classmethod
    def of(cls, value: Any, *, keep: bool = False) -> "Payload":
        text = to_text(value)
        return cls(sha256_hex(text), len(text), text if keep else None)

    def to_dict(self, *, with_content: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "length": self.length}
        if with_content and self.content is not None:
            out["content"] = self.content
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Payload":
        if not isinstance(data, dict):
            raise TraceFormatError("payload must be an object with sha256 and length")
        sha, length, content = data.get("sha256"), data.get("length"), data.get("content")
        if not isinstance(sha, str) or len(sha) != 64 or type(length) is not int or length < 0:
            raise TraceFormatError("payload needs a 64-hex sha256 and a non-negative integer length")
        if content is not None and not isinstance(content, str):
            raise TraceFormatError("payload content must be a string")
        return cls(sha, length, content)


@dataclass(slots=True)
class JobRef:
    """A NIP-90 job an LM call ran as: the kind-5050 request's event id, who answered, what it cost."""

    event_id: str
    provider: str | None = None
    paid_msat: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "provider": self.provider, "paid_msat": self.paid_msat}

    @classmethod
    def from_dict(cls, data: Any) -> "JobRef":
        if not isinstance(data, dict) or not _is_hex64(data.get("event_id")):
            raise TraceFormatError("job reference needs a 64-hex event_id")
        provider = data.get("provider")
        paid = data.get("paid_msat", 0)
        if provider is not None and not isinstance(provider, str):
            raise TraceFormatError("job provider must be a string")
        if type(paid) is not int or paid < 0:
            raise TraceFormatError("job paid_msat must be a non-negative integer")
        return cls(data["event_id"], provider, paid)


@dataclass(slots=True)
class FieldMapping:
    """Map-node lineage: `target_field` of `target` came from `source_field` of `source`."""

    target: str
    target_field: str
    source: str
    source_field: str

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target, "target_field": self.target_field,
                "source": self.source, "source_field": self.source_field}

    @classmethod
    def from_dict(cls, data: Any) -> "FieldMapping":
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("target", "target_field", "source", "source_field")
        ):
            raise TraceFormatError("a mapping needs string target, target_field, source, source_field")
        return cls(data["target"], data["target_field"], data["source"], data["source_field"])


@dataclass(slots=True)
class Node:
    """One step of a run. `role` refines `kind`: program, module, predictor, lm, tool,
    adapter_format, adapter_parse, evaluate, compile, span, exchange, lineage."""

    id: str
    kind: str
    role: str
    name: str = ""
    signature: str | None = None
    input_fields: list[str] = field(default_factory=list)
    output_fields: list[str] = field(default_factory=list)
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    paid_msat: int | None = None
    jobs: list[JobRef] = field(default_factory=list)
    started_at_us: int | None = None
    ended_at_us: int | None = None
    error: str | None = None
    inputs: dict[str, Payload] = field(default_factory=dict)
    outputs: dict[str, Payload] = field(default_factory=dict)
    mappings: list[FieldMapping] = field(default_factory=list)
    cache_hit: bool = False
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def duration_us(self) -> int | None:
        if self.started_at_us is None or self.ended_at_us is None:
            return None
        return max(0, self.ended_at_us - self.started_at_us)

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    def to_dict(self, *, with_content: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "role": self.role, "name": self.name}
        optional = {
            "signature": self.signature,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "paid_msat": self.paid_msat,
            "started_at_us": self.started_at_us,
            "ended_at_us": self.ended_at_us,
            "error": self.error,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.input_fields:
            out["input_fields"] = list(self.input_fields)
        if self.output_fields:
            out["output_fields"] = list(self.output_fields)
        if self.jobs:
            out["jobs"] = [j.to_dict() for j in self.jobs]
        if self.inputs:
            out["inputs"] = {k: p.to_dict(with_content=with_content) for k, p in self.inputs.items()}
        if self.outputs:
            out["outputs"] = {k: p.to_dict(with_content=with_content) for k, p in self.outputs.items()}
        if self.mappings:
            out["mappings"] = [m.to_dict() for m in self.mappings]
        if self.cache_hit:
            out["cache_hit"] = True
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Node":
        if not isinstance(data, dict):
            raise TraceFormatError("a node must be a JSON object")
        node_id, kind, role = data.get("id"), data.get("kind"), data.get("role")
        if not isinstance(node_id, str) or not node_id:
            raise TraceFormatError("a node needs a non-empty string id")
        if kind not in NODE_KINDS:
            raise TraceFormatError(f"node {node_id!r}: kind must be one of {', '.join(NODE_KINDS)}, got {kind!r}")
        if not isinstance(role, str) or not role:
            raise TraceFormatError(f"node {node_id!r}: role must be a non-empty string")
        node = cls(node_id, kind, role, _opt_str(data, "name") or "")
        node.signature = _opt_str(data, "signature")
        node.model = _opt_str(data, "model")
        node.error = _opt_str(data, "error")
        for name in ("prompt_tokens", "completion_tokens", "paid_msat", "started_at_us", "ended_at_us"):
            setattr(node, name, _opt_int(data, name, node_id))
        node.input_fields = _str_list(data.get("input_fields", []), "input_fields")
        node.output_fields = _str_list(data.get("output_fields", []), "output_fields")
        node.jobs = [JobRef.from_dict(j) for j in _list(data.get("jobs", []), "jobs")]
        node.inputs = _payloads(data.get("inputs", {}), "inputs")
        node.outputs = _payloads(data.get("outputs", {}), "outputs")
        node.mappings = [FieldMapping.from_dict(m) for m in _list(data.get("mappings", []), "mappings")]
        node.cache_hit = bool(data.get("cache_hit", False))
        attrs = data.get("attrs", {})
        if not isinstance(attrs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
            raise TraceFormatError(f"node {node_id!r}: attrs must map strings to strings")
        node.attrs = dict(attrs)
        return node


@dataclass(slots=True, frozen=True)
class Edge:
    """`parent` -> `child`. "call": the parent invoked the child; "data": the child consumed
    something the parent produced (the edges dsrs' Nostr mapping lost)."""

    parent: str
    child: str
    kind: str = "call"

    def to_dict(self) -> dict[str, str]:
        return {"parent": self.parent, "child": self.child, "kind": self.kind}

    @classmethod
    def from_dict(cls, data: Any) -> "Edge":
        if not isinstance(data, dict) or not isinstance(data.get("parent"), str) or not isinstance(data.get("child"), str):
            raise TraceFormatError("an edge needs string parent and child")
        kind = data.get("kind", "call")
        if kind not in EDGE_KINDS:
            raise TraceFormatError(f"edge kind must be one of {', '.join(EDGE_KINDS)}, got {kind!r}")
        return cls(data["parent"], data["child"], kind)


@dataclass(slots=True)
class Graph:
    """A run as a DAG. `nodes` are kept in a topological order (parents first)."""

    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    program: str = ""
    source: str = "dspy"
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)

    # -- navigation --------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def get(self, node_id: str) -> Node | None:
        try:
            return self.node(node_id)
        except KeyError:
            return None

    @property
    def root(self) -> Node:
        for n in self.nodes:
            if n.kind == "Root":
                return n
        raise TraceFormatError("the graph has no Root node")

    def parents(self, node_id: str, kind: str | None = None) -> list[str]:
        return [e.parent for e in self.edges if e.child == node_id and (kind is None or e.kind == kind)]

    def children(self, node_id: str, kind: str | None = None) -> list[str]:
        return [e.child for e in self.edges if e.parent == node_id and (kind is None or e.kind == kind)]

    def call_parent(self, node_id: str) -> str | None:
        found = self.parents(node_id, "call")
        return found[0] if found else None

    def by_role(self, role: str) -> list[Node]:
        return [n for n in self.nodes if n.role == role]

    # -- summaries ----------------------------------------------------------------------
    def lm_nodes(self) -> list[Node]:
        """Nodes that carry billed usage (LM calls, or dsrs spans): summing these never double counts."""
        return [n for n in self.nodes if n.role in ("lm", "span")]

    def total_tokens(self) -> tuple[int, int]:
        nodes = self.lm_nodes()
        return sum(n.prompt_tokens or 0 for n in nodes), sum(n.completion_tokens or 0 for n in nodes)

    def total_msat(self) -> int:
        return sum(n.paid_msat or 0 for n in self.lm_nodes())

    def duration_us(self) -> int | None:
        try:
            return self.root.duration_us
        except TraceFormatError:
            return None

    # -- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise TraceFormatError unless ids are unique, there is one Root, edges point at
        known nodes, every non-root node has exactly one call parent and nodes are in a
        topological order."""
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise TraceFormatError("node ids must be unique")
        roots = [n for n in self.nodes if n.kind == "Root"]
        if len(roots) != 1:
            raise TraceFormatError(f"a graph has exactly one Root node, found {len(roots)}")
        position = {node_id: i for i, node_id in enumerate(ids)}
        for e in self.edges:
            if e.parent not in position or e.child not in position:
                raise TraceFormatError(f"edge {e.parent}->{e.child} points at an unknown node")
            if position[e.parent] >= position[e.child]:
                raise TraceFormatError(f"nodes are not in topological order: {e.parent} must precede {e.child}")
        for n in self.nodes:
            calls = self.parents(n.id, "call")
            if n.kind == "Root" and calls:
                raise TraceFormatError("the Root node cannot have a call parent")
            if n.kind != "Root" and len(calls) != 1:
                raise TraceFormatError(f"node {n.id!r} must have exactly one call parent, has {len(calls)}")

    def sort_topologically(self) -> None:
        """Reorder nodes parents-first, ties broken by start time then the current order."""
        order = {n.id: i for i, n in enumerate(self.nodes)}
        by_id = {n.id: n for n in self.nodes}
        indegree = {n.id: 0 for n in self.nodes}
        for e in self.edges:
            if e.child in indegree and e.parent in indegree:
                indegree[e.child] += 1
        import heapq

        def key(node_id: str) -> tuple[int, int]:
            start = by_id[node_id].started_at_us
            return (start if start is not None else 0, order[node_id])

        heap = [(key(i), i) for i, d in indegree.items() if d == 0]
        heapq.heapify(heap)
        out: list[Node] = []
        while heap:
            _, node_id = heapq.heappop(heap)
            out.append(by_id[node_id])
            for child in self.children(node_id):
                if child in indegree:
                    indegree[child] -= 1
                    if indegree[child] == 0:
                        heapq.heappush(heap, (key(child), child))
        if len(out) != len(self.nodes):
            raise TraceFormatError("the graph has a cycle")
        self.nodes = out

    def normalize(self) -> None:
        """Put edges in a canonical order (by child position, call before data, then parent
        position) so equal graphs compare and serialise equal whatever built them."""
        position = {n.id: i for i, n in enumerate(self.nodes)}
        rank = {"call": 0, "data": 1}
        self.edges.sort(key=lambda e: (position.get(e.child, -1), rank.get(e.kind, 2), position.get(e.parent, -1)))

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self, *, with_content: bool = True) -> dict[str, Any]:
        return {
            "format": GRAPH_FORMAT,
            "v": GRAPH_VERSION,
            "trace_id": self.trace_id,
            "program": self.program,
            "source": self.source,
            "attrs": dict(self.attrs),
            "nodes": [n.to_dict(with_content=with_content) for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
        }

    def to_json(self, *, with_content: bool = True, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(with_content=with_content), ensure_ascii=False, indent=indent)

    def save(self, path: Path | str, *, with_content: bool = True) -> None:
        Path(path).write_text(self.to_json(with_content=with_content, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any) -> "Graph":
        if not isinstance(data, dict) or data.get("format") != GRAPH_FORMAT:
            raise TraceFormatError(f"not a Pylon trace graph (expected \"format\": \"{GRAPH_FORMAT}\")")
        version = data.get("v")
        if type(version) is not int or version > GRAPH_VERSION:
            raise TraceFormatError(f"trace graph version {version!r} is not supported (this reader: {GRAPH_VERSION})")
        trace_id = data.get("trace_id")
        if not isinstance(trace_id, str) or not trace_id:
            raise TraceFormatError("a graph needs a non-empty trace_id")
        attrs = data.get("attrs", {})
        if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
            raise TraceFormatError("graph attrs must map strings to strings")
        graph = cls(
            trace_id=trace_id,
            program=_opt_str(data, "program") or "",
            source=_opt_str(data, "source") or "dspy",
            nodes=[Node.from_dict(n) for n in _list(data.get("nodes"), "nodes")],
            edges=[Edge.from_dict(e) for e in _list(data.get("edges", []), "edges")],
            attrs=dict(attrs),
        )
        graph.validate()
        return graph

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TraceFormatError(f"trace graph is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: Path | str) -> "Graph":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


# -- parsing helpers ------------------------------------------------------------------------
def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _opt_str(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise TraceFormatError(f"{name} must be a string")
    return value


def _opt_int(data: dict, name: str, where: str) -> int | None:
    value = data.get(name)
    if value is not None and (type(value) is not int or value < 0):
        raise TraceFormatError(f"node {where!r}: {name} must be a non-negative integer")
    return value


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise TraceFormatError(f"{name} must be a list")
    return value


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise TraceFormatError(f"{name} must be a list of strings")
    return list(value)


def _payloads(value: Any, name: str) -> dict[str, Payload]:
    if not isinstance(value, dict):
        raise TraceFormatError(f"{name} must map field names to payloads")
    return {str(k): Payload.from_dict(v) for k, v in value.items()}


def iter_tree(graph: Graph) -> Iterable[tuple[int, Node]]:
    """Depth-first over call edges from the root: (depth, node), children in start order."""
    by_id = {n.id: n for n in graph.nodes}
    kids: dict[str, list[str]] = {}
    for e in graph.edges:
        if e.kind == "call":
            kids.setdefault(e.parent, []).append(e.child)
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    stack = [(0, graph.root.id)]
    while stack:
        depth, node_id = stack.pop()
        yield depth, by_id[node_id]
        children = sorted(kids.get(node_id, []), key=lambda c: order[c], reverse=True)
        stack.extend((depth + 1, c) for c in children)
