"""Record a DSPy program run as a DAG through DSPy's own callback hooks.

DSPy calls a callback's start hook *before* it sets its active call id, so inside
a start hook `ACTIVE_CALL_ID.get()` is the caller's call id: that is the parent
link. DSPy carries that context variable into dspy.Parallel worker threads and
into asyncio tasks, so the tree is right under both. Every mutation happens under
one lock because those threads call back concurrently.

Besides call edges the recorder derives dataflow: when a predictor, tool or
module receives an input whose value (by sha256) is an output field of a node
that already finished, a Map node records the lineage "this input field came
from that node's field" with data edges source -> Map -> consumer.

LM-call nodes take usage, model and — when the call went over the swarm — the
NIP-90 job id, provider and msats from the `pylon` entry of the lm15 Response's
`provider_data` (see `dsrs_bridge.lm`). A cached answer (DSPy reports no usage
for it) is marked `cache_hit` and costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any, Iterator

from dsrs_bridge.graph import Edge, FieldMapping, Graph, JobRef, Node, Payload

log = logging.getLogger(__name__)

# Inputs to dspy.Predict.__call__ that are configuration, not signature fields.
_PREDICT_CONTROL_KWARGS = {"config", "lm", "demos", "signature", "new_signature"}
_PRODUCER_ROLES = ("predictor", "tool", "module", "lm")
_MAX_ERROR = 500


def now_us() -> int:
    return time.time_ns() // 1000


def _error_text(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


def _signature_name(sig: Any) -> str:
    """A class-based signature's name; an inline one ("question -> answer") by its fields."""
    name = getattr(sig, "__name__", None)
    if name and name != "StringSignature":
        return name
    text = getattr(sig, "signature", None)
    return text if isinstance(text, str) and text else (name or str(sig))


def _fields(value: Any) -> dict[str, Any]:
    """The named fields of a Prediction / Example / dict / anything else (as 'value')."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    items = getattr(value, "items", None)
    if callable(items):
        try:
            return dict(items())
        except Exception:  # pragma: no cover - exotic mapping
            pass
    return {"value": value}


class TraceRecorder:
    """The callback itself (a dspy BaseCallback); use `record()` rather than this directly."""

    def __init__(self, graph: Graph, *, capture_content: bool = True, names: dict[int, str] | None = None):
        from dspy.utils.callback import BaseCallback  # dspy is an optional extra

        # Become a BaseCallback subclass instance without importing dspy at module import.
        if not isinstance(self, BaseCallback):  # pragma: no cover - guarded by the class factory below
            raise TypeError("use make_recorder()")
        self.graph = graph
        self.capture_content = capture_content
        self.names = names or {}
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {graph.root.id: graph.root}
        self._lm_instances: dict[str, Any] = {}
        self._map_seq = 0

    # -- plumbing --------------------------------------------------------------------------
    def _payload(self, value: Any) -> Payload:
        return Payload.of(value, keep=self.capture_content)

    def _open(self, call_id: str, node: Node) -> None:
        from dspy.utils.callback import ACTIVE_CALL_ID

        parent = ACTIVE_CALL_ID.get()
        node.started_at_us = now_us()
        with self._lock:
            if parent not in self._nodes:
                parent = self.graph.root.id
            self._nodes[call_id] = node
            self.graph.nodes.append(node)
            self.graph.edges.append(Edge(parent, call_id, "call"))
            if node.inputs and node.role in ("predictor", "tool", "module"):
                self._link_inputs(node, parent)

    def _close(self, call_id: str, exception: BaseException | None) -> Node | None:
        with self._lock:
            node = self._nodes.get(call_id)
        if node is None:
            return None
        node.ended_at_us = now_us()
        node.error = _error_text(exception)
        return node

    def _link_inputs(self, consumer: Node, call_parent: str) -> None:
        """Under the lock: add a Map node for inputs that equal a finished node's output."""
        mappings: list[FieldMapping] = []
        sources: list[str] = []
        # A value the caller itself received was handed down by the call, not routed.
        handed_down = {p.sha256 for p in self._nodes[call_parent].inputs.values()}
        for field_name, payload in consumer.inputs.items():
            if payload.length == 0 or payload.sha256 in handed_down:
                continue
            source = self._find_producer(payload.sha256, exclude=consumer.id)
            if source is None:
                continue
            node, source_field = source
            mappings.append(FieldMapping(consumer.id, field_name, node.id, source_field))
            if node.id not in sources:
                sources.append(node.id)
        if not mappings:
            return
        self._map_seq += 1
        map_node = Node(
            id=f"map-{consumer.id}",
            kind="Map",
            role="lineage",
            name=f"{consumer.name} <- " + ", ".join(sorted({self._nodes[s].name for s in sources})),
            started_at_us=consumer.started_at_us,
            ended_at_us=consumer.started_at_us,
            mappings=mappings,
        )
        self._nodes[map_node.id] = map_node
        self.graph.nodes.append(map_node)
        self.graph.edges.append(Edge(call_parent, map_node.id, "call"))
        for s in sources:
            self.graph.edges.append(Edge(s, map_node.id, "data"))
        self.graph.edges.append(Edge(map_node.id, consumer.id, "data"))

    def _find_producer(self, sha: str, exclude: str) -> tuple[Node, str] | None:
        """The finished node that produced this value: predictors/tools before modules
        (a module re-exports what its predictor produced), the latest one first."""
        best: tuple[int, int, Node, str] | None = None
        for node in self._nodes.values():
            if node.id == exclude or node.ended_at_us is None or node.role not in _PRODUCER_ROLES:
                continue
            if node.error is not None:
                continue
            for field_name, payload in node.outputs.items():
                if payload.sha256 == sha:
                    rank = 1 if node.role in ("predictor", "tool") else 0
                    candidate = (rank, node.ended_at_us, node, field_name)
                    if best is None or candidate[:2] > best[:2]:
                        best = candidate
        return (best[2], best[3]) if best else None

    def _name(self, instance: Any, fallback: str) -> str:
        return self.names.get(id(instance)) or fallback

    # -- modules and predictors ---------------------------------------------------------------
    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        import dspy

        args = inputs.get("args", ()) or ()
        kwargs = dict(inputs.get("kwargs", {}) or {})
        cls_name = type(instance).__name__
        if isinstance(instance, dspy.Predict):
            sig = instance.signature
            node = Node(call_id, "Predict", "predictor", self._name(instance, cls_name))
            node.signature = _signature_name(sig)
            node.input_fields = list(sig.input_fields)
            node.output_fields = list(sig.output_fields)
            node.attrs["instructions_sha256"] = Payload.of(getattr(sig, "instructions", "") or "").sha256
            node.attrs["demos"] = str(len(getattr(instance, "demos", []) or []))
            node.inputs = {k: self._payload(v) for k, v in kwargs.items()
                           if k not in _PREDICT_CONTROL_KWARGS and k in sig.input_fields}
        else:
            node = Node(call_id, "Operator", "module", self._name(instance, cls_name))
            node.attrs["class"] = cls_name
            node.inputs = {f"arg{i}": self._payload(v) for i, v in enumerate(args)}
            node.inputs.update({k: self._payload(v) for k, v in kwargs.items()})
        self._open(call_id, node)

    def on_module_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        node = self._close(call_id, exception)
        if node is not None and outputs is not None:
            fields = _fields(outputs) if not isinstance(outputs, (list, tuple)) else {"value": outputs}
            node.outputs = {k: self._payload(v) for k, v in fields.items()}

    # -- LM calls ----------------------------------------------------------------------------
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        model = str(getattr(instance, "model", type(instance).__name__))
        node = Node(call_id, "Predict", "lm", model, model=model)
        messages = inputs.get("messages")
        prompt = inputs.get("prompt")
        if messages is not None:
            node.inputs["messages"] = self._payload(messages)
        if prompt is not None:
            node.inputs["prompt"] = self._payload(prompt)
        kwargs = {**(getattr(instance, "kwargs", {}) or {}), **(inputs.get("kwargs", {}) or {})}
        for key in ("temperature", "max_tokens", "n", "top_p", "rollout_id"):
            if kwargs.get(key) is not None:
                node.attrs[key] = str(kwargs[key])
        if "response_format" in kwargs and kwargs["response_format"] is not None:
            node.attrs["response_format"] = "yes"
        with self._lock:
            self._lm_instances[call_id] = instance
        self._open(call_id, node)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        node = self._close(call_id, exception)
        with self._lock:
            instance = self._lm_instances.pop(call_id, None)
        if node is None:
            return
        if isinstance(outputs, list):
            if len(outputs) == 1:
                node.outputs["text"] = self._payload(outputs[0])
            else:
                node.outputs = {f"text[{i}]": self._payload(o) for i, o in enumerate(outputs)}
        elif outputs is not None:
            node.outputs["text"] = self._payload(getattr(outputs, "text", outputs))
        entry = self._history_entry(instance, outputs)
        if entry is not None:
            self._apply_history(node, entry)

    @staticmethod
    def _history_entry(instance: Any, outputs: Any) -> dict | None:
        """The LM history entry of *this* call: DSPy stores the very outputs object it returns,
        so identity finds it even while other threads append to the same history."""
        if instance is None or outputs is None:
            return None
        history = list(getattr(instance, "history", []) or [])
        for entry in reversed(history[-256:]):
            if isinstance(entry, dict) and entry.get("outputs") is outputs:
                return entry
        return None

    @staticmethod
    def _apply_history(node: Node, entry: dict) -> None:
        usage = entry.get("usage") or {}
        if isinstance(usage, dict) and usage:
            if isinstance(usage.get("prompt_tokens"), int):
                node.prompt_tokens = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                node.completion_tokens = usage["completion_tokens"]
        if entry.get("response_model"):
            node.attrs["response_model"] = str(entry["response_model"])
        responses = entry.get("response")
        if not isinstance(responses, (list, tuple)):
            responses = [responses] if responses is not None else []
        cache_hit = not usage and bool(responses)
        node.cache_hit = cache_hit
        paid = 0
        for response in responses:
            data = getattr(response, "provider_data", None) or {}
            pylon = data.get("pylon") if isinstance(data, dict) else None
            if not isinstance(pylon, dict) or not isinstance(pylon.get("job_id"), str):
                continue
            msat = pylon.get("paid_msat", 0)
            msat = msat if type(msat) is int and msat >= 0 and not cache_hit else 0
            provider = pylon.get("provider") if isinstance(pylon.get("provider"), str) else None
            try:
                node.jobs.append(JobRef.from_dict({"event_id": pylon["job_id"], "provider": provider, "paid_msat": msat}))
            except Exception:
                log.debug("ignoring malformed pylon provider data on an LM response")
                continue
            paid += msat
        if node.jobs or cache_hit:
            node.paid_msat = paid

    # -- tools, adapters, evaluation -------------------------------------------------------
    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        name = str(getattr(instance, "name", None) or type(instance).__name__)
        node = Node(call_id, "Operator", "tool", name)
        args = inputs.get("kwargs", inputs) or {}
        node.inputs = {str(k): self._payload(v) for k, v in dict(args).items()}
        self._open(call_id, node)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        node = self._close(call_id, exception)
        if node is not None and exception is None:
            node.outputs["result"] = self._payload(outputs)

    def _adapter_start(self, call_id: str, instance: Any, inputs: dict[str, Any], role: str) -> None:
        node = Node(call_id, "Operator", role, type(instance).__name__)
        sig = inputs.get("signature")
        if sig is not None:
            node.signature = _signature_name(sig)
        if role == "adapter_format":
            node.inputs["inputs"] = self._payload(inputs.get("inputs"))
            node.attrs["demos"] = str(len(inputs.get("demos") or []))
        else:
            node.inputs["completion"] = self._payload(inputs.get("completion"))
        self._open(call_id, node)

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._adapter_start(call_id, instance, inputs, "adapter_format")

    def on_adapter_format_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        node = self._close(call_id, exception)
        if node is not None and outputs is not None:
            node.outputs["messages"] = self._payload(outputs)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._adapter_start(call_id, instance, inputs, "adapter_parse")

    def on_adapter_parse_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        node = self._close(call_id, exception)
        if node is not None and outputs is not None:
            node.outputs = {k: self._payload(v) for k, v in _fields(outputs).items()}

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._open(call_id, Node(call_id, "Operator", "evaluate", type(instance).__name__))

    def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        node = self._close(call_id, exception)
        score = getattr(outputs, "score", None)
        if node is not None and isinstance(score, (int, float)):
            node.attrs["score"] = repr(float(score))

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._open(call_id, Node(call_id, "Operator", "compile", type(instance).__name__))

    def on_compile_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._close(call_id, exception)

    # -- finishing ------------------------------------------------------------------------------
    def finish(self, exception: BaseException | None) -> None:
        root = self.graph.root
        end = now_us()
        with self._lock:
            root.ended_at_us = end
            root.error = _error_text(exception)
            for node in self.graph.nodes:
                if node.ended_at_us is None:
                    node.ended_at_us = end
                    node.error = node.error or "unfinished: the recording ended while this call was running"
            self.graph.sort_topologically()
            self.graph.normalize()
            self.graph.validate()


def _recorder_class() -> type:
    from dspy.utils.callback import BaseCallback

    return type("DagRecorder", (TraceRecorder, BaseCallback), {})


def _names_of(program: Any) -> dict[int, str]:
    names: dict[int, str] = {}
    walk = getattr(program, "named_sub_modules", None)
    if callable(walk):
        try:
            for name, module in walk():
                names.setdefault(id(module), name.removeprefix("self.") if name != "self" else type(module).__name__)
        except Exception:  # pragma: no cover - naming is best effort
            log.debug("could not name the program's sub-modules", exc_info=True)
    return names


@contextlib.contextmanager
def record(program: Any = None, *, name: str | None = None, capture_content: bool = True) -> Iterator[Graph]:
    """Record every DSPy module, predictor, LM, tool and adapter call made inside the block.

        with record(program) as graph:
            program(question="…")
        graph.nodes  # finished, topologically ordered, validated

    The yielded Graph is filled in as calls finish and is final when the block exits.
    `program` (optional) names predictors by their attribute path ("qa.predict").
    `capture_content=False` keeps only hashes and lengths of prompts and outputs.
    """
    import dspy

    program_name = name or (type(program).__name__ if program is not None else "dspy-program")
    root = Node(uuid.uuid4().hex, "Root", "program", program_name, started_at_us=now_us())
    graph = Graph(program=program_name, source="dspy", nodes=[root])
    graph.attrs["dspy_version"] = getattr(dspy, "__version__", "")
    recorder = _recorder_class()(graph, capture_content=capture_content, names=_names_of(program))
    callbacks = list(dspy.settings.get("callbacks", []) or []) + [recorder]
    error: BaseException | None = None
    try:
        with dspy.context(callbacks=callbacks):
            yield graph
    except BaseException as exc:
        error = exc
        raise
    finally:
        recorder.finish(error)
