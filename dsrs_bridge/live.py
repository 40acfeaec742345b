"""Live trace: node start/end as ephemeral Nostr events while a program runs (opt-in), and
the model `pylon trace watch` renders from them.

`record_live(program, relays=..., keys=...)` is `record()` plus a publisher thread that
looks at the growing Graph every `interval_s` and publishes, per node, a "start" event when
it appears and an "end" event when it finishes (tokens, msats, error). The events are kind
23571 (ephemeral: relays hand them to live subscribers and store nothing), tagged
["t", "pylon-trace-live"], ["trace", <trace id>], ["alt", ...]; the content is
{"phase", "trace", "program", "parent", "node": <node metadata without prompt/output text>}.
The published trace (kind 3571) stays the durable record; this is the HUD.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from dsrs_bridge.graph import Graph, Node
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

LIVE_KIND = 23571
LIVE_TOPIC = "pylon-trace-live"


def node_event(keys: Keys, graph: Graph, node: Node, phase: str) -> Event:
    content = {"phase": phase, "trace": graph.trace_id, "program": graph.program,
               "parent": graph.call_parent(node.id), "node": node.to_dict(with_content=False)}
    tags = [["t", LIVE_TOPIC], ["trace", graph.trace_id],
            ["alt", f"Pylon live trace: {node.kind} {node.name} {phase}"]]
    return Event.build(keys, LIVE_KIND, json.dumps(content, separators=(",", ":")), tags)


class LivePublisher:
    """Publishes a growing Graph's node starts and ends from its own thread and loop."""

    def __init__(self, graph: Graph, relays: Sequence[str], keys: Keys, interval_s: float = 0.2) -> None:
        self.graph, self.relays, self.keys, self.interval_s = graph, list(relays), keys, interval_s
        self._started: set[str] = set()
        self._ended: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="pylon-live", daemon=True)
        self.published = 0

    def _due(self) -> list[Event]:
        out = []
        for node in list(self.graph.nodes):
            if node.id not in self._started:
                self._started.add(node.id)
                out.append(node_event(self.keys, self.graph, node, "start"))
            if node.ended_at_us is not None and node.id not in self._ended:
                self._ended.add(node.id)
                out.append(node_event(self.keys, self.graph, node, "end"))
        return out

    async def _run(self) -> None:
        from pylon.relay.pool import RelayPool

        async with RelayPool(self.relays, keys=self.keys) as pool:
            await pool.wait_connected()
            while True:
                stopping = self._stop.is_set()
                for event in self._due():
                    try:
                        await pool.publish(event)
                        self.published += 1
                    except Exception:  # a live view is best effort: the run goes on
                        pass
                if stopping:
                    return
                await asyncio.sleep(self.interval_s)

    def start(self) -> "LivePublisher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is left (the root's end included) and stop."""
        self._stop.set()
        self._thread.join(timeout)


@contextmanager
def record_live(program: Any = None, *, relays: Sequence[str], keys: Keys, name: str | None = None,
                capture_content: bool = True, interval_s: float = 0.2) -> Iterator[Graph]:
    """`record()` that also publishes node start/end as ephemeral events while it runs."""
    from dsrs_bridge.recorder import record

    publisher: LivePublisher | None = None
    try:
        with record(program, name=name, capture_content=capture_content) as graph:
            publisher = LivePublisher(graph, relays, keys, interval_s).start()
            yield graph
    finally:
        if publisher is not None:
            publisher.stop()


@dataclass
class LiveTrace:
    """What a watcher knows of one running trace."""

    trace_id: str
    program: str
    author: str
    nodes: dict[str, Node] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def children(self, node_id: str) -> list[str]:
        return [n for n in self.order if self.parents.get(n) == node_id]

    def totals(self) -> tuple[int, int]:
        tokens = sum(n.total_tokens for n in self.nodes.values() if n.role == "lm" or n.kind == "Predict")
        msat = sum(n.paid_msat or 0 for n in self.nodes.values() if n.role == "lm")
        return tokens, msat


class LiveModel:
    """Traces assembled from live events (bad or foreign-shaped events are ignored)."""

    def __init__(self) -> None:
        self.traces: dict[str, LiveTrace] = {}

    def apply(self, event: Event) -> bool:
        if event.kind != LIVE_KIND or not event.is_valid():
            return False
        try:
            data = json.loads(event.content)
            node = Node.from_dict(data["node"])
            trace_id = str(data["trace"])
        except Exception:
            return False
        trace = self.traces.setdefault(f"{event.pubkey}:{trace_id}",
                                       LiveTrace(trace_id, str(data.get("program") or ""), event.pubkey))
        if node.id not in trace.nodes:
            trace.order.append(node.id)
        trace.nodes[node.id] = node
        parent = data.get("parent")
        trace.parents[node.id] = parent if isinstance(parent, str) else None
        return True
