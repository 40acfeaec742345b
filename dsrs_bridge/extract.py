"""TraceExtractor: past runs -> a DSPy trainset.

Every recorded graph (dsrs_bridge.recorder) or fetched trace (nostr_trace.fetch_trace, with
the owner's keys so content encrypted to them is readable) holds its predictors' calls as
Predict/predictor nodes: the input fields' values in `inputs`, the output fields' values in
`outputs`. `extract_examples` turns the successful ones into `dspy.Example`s:

- a node counts when it has no error and the text of every input and output field (a
  trace published without content has only hashes: such nodes are skipped);
- `signature=` keeps one predictor's calls: a signature string ("question -> answer"), a
  dspy.Signature class, or a predictor name ("qa.answer");
- `metric=` judges each call as DSPy metrics do, `metric(example, prediction)` with the
  example (inputs and outputs) and a dspy.Prediction of the outputs; falsy or below
  `threshold` drops it;
- the same call seen twice (a trace fetched twice, republished, or two identical runs)
  gives one example: identity is the signature and the sha256 of every field.

Examples come back with `.with_inputs(...)` set to the signature's input fields, so they
go straight into an optimizer's `trainset`. `save_jsonl`/`load_jsonl` keep them on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from dsrs_bridge.graph import Graph, Node, TraceFormatError

Metric = Callable[..., Any]


def _signature_key(signature: Any) -> tuple[str | None, tuple[str, ...] | None]:
    """(name-or-string, fields) a node is matched against."""
    if signature is None:
        return None, None
    if isinstance(signature, str):
        return signature.strip(), None
    fields = tuple(list(getattr(signature, "input_fields", {})) + list(getattr(signature, "output_fields", {})))
    name = getattr(signature, "__name__", None)
    if not name or name == "StringSignature":
        name = getattr(signature, "signature", None)
    return name, fields or None


def _matches(node: Node, wanted: tuple[str | None, tuple[str, ...] | None]) -> bool:
    name, fields = wanted
    if name is None and fields is None:
        return True
    if fields is not None and tuple(node.input_fields + node.output_fields) == fields:
        return True
    return name is not None and name in (node.signature, node.name)


def _texts(node: Node) -> tuple[dict[str, str], dict[str, str]] | None:
    """The node's input and output field texts, or None when any is missing (hash only)."""
    ins = node.input_fields or list(node.inputs)
    outs = node.output_fields or list(node.outputs)
    if not outs:
        return None
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for names, payloads, into in ((ins, node.inputs, inputs), (outs, node.outputs, outputs)):
        for name in names:
            payload = payloads.get(name)
            if payload is None or payload.content is None:
                return None
            into[name] = payload.content
    return inputs, outputs


def _identity(node: Node, inputs: dict[str, str], outputs: dict[str, str]) -> tuple:
    return (node.signature or node.name, tuple(sorted((k, node.inputs[k].sha256) for k in inputs)),
            tuple(sorted((k, node.outputs[k].sha256) for k in outputs)))


def extract_examples(graphs: Iterable[Graph], *, metric: Metric | None = None, signature: Any = None,
                     threshold: float | None = None) -> list[Any]:
    """The successful Predict calls of `graphs` as deduplicated dspy.Examples (in run order)."""
    import dspy

    wanted = _signature_key(signature)
    seen: set[tuple] = set()
    examples: list[Any] = []
    for graph in graphs:
        for node in graph.nodes:
            if node.kind != "Predict" or node.role != "predictor" or node.error or not _matches(node, wanted):
                continue
            texts = _texts(node)
            if texts is None:
                continue
            inputs, outputs = texts
            key = _identity(node, inputs, outputs)
            if key in seen:
                continue
            example = dspy.Example(**inputs, **outputs).with_inputs(*inputs)
            if metric is not None:
                score = metric(example, dspy.Prediction(**outputs))
                if not score or (threshold is not None and float(score) < threshold):
                    continue
            seen.add(key)
            examples.append(example)
    return examples


async def fetch_examples(root_event_ids: Sequence[str], relays: Sequence[str], *, keys: Any = None,
                         metric: Metric | None = None, signature: Any = None) -> list[Any]:
    """Fetch published traces (decrypting what was encrypted to `keys`) and extract from them;
    one relay connection serves every trace."""
    from dsrs_bridge.nostr_trace import fetch_trace
    from pylon.relay.pool import RelayPool

    async with RelayPool(list(relays), keys=keys) as pool:
        await pool.wait_connected(fail_fast=True)  # a refused relay is said at once
        graphs = [await fetch_trace(root_id, keys=keys, pool=pool) for root_id in root_event_ids]
    return extract_examples(graphs, metric=metric, signature=signature)


def save_jsonl(examples: Sequence[Any], path: str | Path) -> int:
    """One JSON object per line: {"example": fields, "inputs": [input field names]}."""
    lines = [json.dumps({"example": dict(e.toDict()), "inputs": sorted(e.inputs().keys())}, ensure_ascii=False)
             for e in examples]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def load_jsonl(path: str | Path) -> list[Any]:
    """Examples written by save_jsonl (`pylon trace export`), ready for a trainset."""
    import dspy

    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(dspy.Example(**row["example"]).with_inputs(*row["inputs"]))
        except (ValueError, KeyError, TypeError):
            raise TraceFormatError(f"{path}:{number}: not an exported example") from None
    return out
