"""DSPy on the swarm: a Pylon engine for dspy.LM, and execution DAGs as Nostr trace events.

Submodules are imported lazily so that `dsrs_bridge.graph` and `dsrs_bridge.nostr_trace`
work without the optional dspy extra; the recorder and the LM need `pylon-swarm[dspy]`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Graph", "Node", "Edge", "record", "import_dsrs_jsonl", "graph_to_nostr_events",
           "publish_trace", "fetch_trace", "pylon_lm", "compile", "extract_examples", "spread_lm"]

_LAZY = {
    "Graph": "dsrs_bridge.graph",
    "Node": "dsrs_bridge.graph",
    "Edge": "dsrs_bridge.graph",
    "record": "dsrs_bridge.recorder",
    "import_dsrs_jsonl": "dsrs_bridge.dsrs_import",
    "graph_to_nostr_events": "dsrs_bridge.nostr_trace",
    "publish_trace": "dsrs_bridge.nostr_trace",
    "fetch_trace": "dsrs_bridge.nostr_trace",
    "pylon_lm": "dsrs_bridge.lm",
    "compile": "dsrs_bridge.compiler",  # the SwarmCompiler (a module named compile would shadow it)
    "extract_examples": "dsrs_bridge.extract",
    "spread_lm": "dsrs_bridge.rollouts",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dsrs_bridge' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
