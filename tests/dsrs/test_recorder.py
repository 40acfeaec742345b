"""The DAG recorder on real DSPy programs: a real dspy.LM (DSPy's own HTTP engine) talking
to a local OpenAI-compatible chat DOUBLE (tests/dsrs/chat_double.py) over real HTTP."""

from __future__ import annotations

import asyncio

import dspy
import pytest

from dsrs_bridge.graph import Graph, Payload, iter_tree
from dsrs_bridge.recorder import record


class Inner(dspy.Module):
    def __init__(self):
        super().__init__()
        self.summarize = dspy.Predict("question -> summary")

    def forward(self, question):
        return self.summarize(question=question)

    async def aforward(self, question):
        return await self.summarize.acall(question=question)


class Outer(dspy.Module):
    """Two levels: Outer -> Inner -> Predict, then a ChainOfThought fed by Inner's output."""

    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.answer = dspy.ChainOfThought("summary -> answer")

    def forward(self, question):
        s = self.inner(question=question)
        return self.answer(summary=s.summary)

    async def aforward(self, question):
        s = await self.inner.acall(question=question)
        return await self.answer.acall(summary=s.summary)


@pytest.fixture
def lm(chat_double):
    model = dspy.LM("openai/double", api_base=chat_double.base_url, api_key="test-key", cache=False)
    with dspy.context(lm=model, adapter=dspy.ChatAdapter()):
        yield model


def shape(g: Graph) -> list[tuple[int, str, str, str]]:
    return [(d, n.kind, n.role, n.name) for d, n in iter_tree(g)]


def test_two_level_program_tree(lm, chat_double):
    prog = Outer()
    with record(prog) as g:
        out = prog(question="What is a relay?")
    assert out.answer.startswith("answer-")
    assert shape(g) == [
        (0, "Root", "program", "Outer"),
        (1, "Operator", "module", "Outer"),
        (2, "Operator", "module", "inner"),
        (3, "Predict", "predictor", "inner.summarize"),
        (4, "Operator", "adapter_format", "ChatAdapter"),
        (4, "Predict", "lm", "openai/double"),
        (4, "Operator", "adapter_parse", "ChatAdapter"),
        (2, "Map", "lineage", "answer <- inner.summarize"),
        (2, "Operator", "module", "answer"),
        (3, "Predict", "predictor", "answer.predict"),
        (4, "Operator", "adapter_format", "ChatAdapter"),
        (4, "Predict", "lm", "openai/double"),
        (4, "Operator", "adapter_parse", "ChatAdapter"),
    ]
    summarize = next(n for n in g.nodes if n.name == "inner.summarize")
    assert summarize.signature == "question -> summary"
    assert summarize.input_fields == ["question"] and summarize.output_fields == ["summary"]
    # usage comes from the server's reply, per call
    lms = g.by_role("lm")
    assert len(lms) == 2 == len(chat_double.requests)
    assert all(n.prompt_tokens and n.completion_tokens for n in lms)
    assert g.total_tokens()[0] == sum(n.prompt_tokens for n in lms)
    # lineage: the CoT module's `summary` input is Inner's predictor output `summary`
    m = g.by_role("lineage")[0]
    answer_mod = next(n for n in g.nodes if n.name == "answer")
    assert [(x.target, x.target_field, x.source, x.source_field) for x in m.mappings] == [
        (answer_mod.id, "summary", summarize.id, "summary")]
    assert g.parents(answer_mod.id, "data") == [m.id] and g.parents(m.id, "data") == [summarize.id]
    # times are nested and content captured
    for n in g.nodes:
        assert n.started_at_us is not None and n.ended_at_us >= n.started_at_us
    assert summarize.inputs["question"] == Payload.of("What is a relay?", keep=True)
    assert Graph.from_json(g.to_json()).to_dict() == g.to_dict()


def test_parallel_threads_keep_their_parents(lm):
    prog = Inner()
    parallel = dspy.Parallel(num_threads=8)
    questions = [f"question number {i}" for i in range(12)]
    with record(prog) as g:
        results = parallel([(prog, {"question": q}) for q in questions])
    assert len(results) == 12 and all(r.summary.startswith("summary-") for r in results)
    inners = [n for n in g.nodes if n.role == "module" and n.attrs["class"] == "Inner"]
    assert len(inners) == 12
    seen_questions = set()
    for mod in inners:
        assert g.call_parent(mod.id) == g.root.id
        (pred,) = g.children(mod.id, "call")
        lm_nodes = [c for c in g.children(pred, "call") if g.node(c).role == "lm"]
        assert len(lm_nodes) == 1
        # the predictor under this module got this module's question
        assert g.node(pred).inputs["question"].sha256 == mod.inputs["question"].sha256
        seen_questions.add(mod.inputs["question"].content)
    assert seen_questions == set(questions)


async def test_asyncio_gather_with_acall(lm):
    prog = Outer()
    with record(prog) as g:
        outs = await asyncio.gather(*(prog.acall(question=f"async {i}") for i in range(5)))
    assert len(outs) == 5
    tops = g.children(g.root.id, "call")
    assert len([t for t in tops if g.node(t).role == "module"]) == 5
    for top in tops:
        node = g.node(top)
        kids = [g.node(c) for c in g.children(top, "call")]
        assert [k.role for k in kids] == ["module", "lineage", "module"]
        # each top-level call's lineage points inside its own subtree
        (m,) = [k for k in kids if k.role == "lineage"]
        src = g.node(m.mappings[0].source)
        inner = kids[0]
        assert g.call_parent(src.id) == inner.id, node.name
    assert len(g.by_role("lm")) == 10


def test_errors_are_recorded_and_reraised(lm):
    class Broken(dspy.Module):
        def __init__(self):
            super().__init__()
            self.p = dspy.Predict("question -> answer")

        def forward(self, question):
            self.p(question=question)
            raise RuntimeError("tool failed")

    prog = Broken()
    with pytest.raises(RuntimeError):
        with record(prog) as g:
            prog(question="q")
    assert g.root.error == "RuntimeError: tool failed"
    module = g.by_role("module")[0]
    assert module.error == "RuntimeError: tool failed"
    assert g.by_role("predictor")[0].error is None


def test_tools_are_recorded():
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    tool = dspy.Tool(add)
    with record(name="tools") as g:
        assert tool(a=2, b=3) == 5
    (node,) = g.by_role("tool")
    assert node.name == "add" and node.kind == "Operator"
    assert node.outputs["result"] == Payload.of(5, keep=True)
    assert set(node.inputs) == {"a", "b"}


def test_content_capture_can_be_off(lm):
    prog = Inner()
    with record(prog, capture_content=False) as g:
        prog(question="secret question")
    assert "secret question" not in g.to_json()
    assert g.by_role("predictor")[0].inputs["question"] == Payload.of("secret question")
