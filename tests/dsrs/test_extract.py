"""TraceExtractor: recorded runs (a real dspy.LM on the chat DOUBLE over HTTP) and the same
run published with content encrypted to its owner on the real embedded relay -> examples."""

from __future__ import annotations

import dspy
import pytest

from dsrs_bridge.extract import extract_examples, fetch_examples, load_jsonl, save_jsonl
from dsrs_bridge.nostr_trace import publish_trace
from dsrs_bridge.recorder import record
from pylon.nostr.keys import Keys

from test_recorder import Outer


@pytest.fixture
def runs(chat_double):
    model = dspy.LM("openai/double", api_base=chat_double.base_url, api_key="test-key", cache=False)
    graphs = []
    with dspy.context(lm=model, adapter=dspy.ChatAdapter()):
        for question in ("What is a relay?", "What is a zap?"):
            prog = Outer()
            with record(prog) as g:
                prog(question=question)
            graphs.append(g)
    return graphs


def test_examples_from_recorded_graphs(runs):
    examples = extract_examples(runs)
    # two runs x two predictors (the inner Predict and the ChainOfThought's Predict)
    assert len(examples) == 4
    summarize = extract_examples(runs, signature="question -> summary")
    assert [e.question for e in summarize] == ["What is a relay?", "What is a zap?"]
    assert all(set(e.inputs().keys()) == {"question"} and e.summary for e in summarize)
    by_class = extract_examples(runs, signature=dspy.Signature("summary -> reasoning, answer"))
    assert len(by_class) == 2 and all(set(e.inputs().keys()) == {"summary"} for e in by_class)
    # the same runs seen twice are the same examples
    assert len(extract_examples([*runs, *runs])) == 4
    # a metric keeps only what it approves of
    zap = extract_examples(runs, signature="question -> summary", metric=lambda ex, pred: "zap" in ex.question)
    assert [e.question for e in zap] == ["What is a zap?"]


def test_failed_calls_are_not_examples(runs):
    runs[0].node(next(n.id for n in runs[0].nodes if n.signature == "question -> summary")).error = "boom"
    assert [e.question for e in extract_examples(runs, signature="question -> summary")] == ["What is a zap?"]


async def test_examples_from_a_published_encrypted_trace(runs, relay_url, tmp_path):
    owner = Keys.generate()
    roots = [await publish_trace(g, [relay_url], owner, include_content=True, encrypt_to=owner.public_key)
             for g in runs]
    examples = await fetch_examples(roots, [relay_url], keys=owner, signature="question -> summary")
    assert [e.question for e in examples] == ["What is a relay?", "What is a zap?"]
    assert [e.toDict() for e in examples] == [e.toDict() for e in extract_examples(runs, signature="question -> summary")]
    # without the owner's key only hashes arrive: nothing to learn from
    assert await fetch_examples(roots, [relay_url], keys=Keys.generate()) == []
    path = tmp_path / "examples.jsonl"
    assert save_jsonl(examples, path) == 2
    back = load_jsonl(path)
    assert [e.toDict() for e in back] == [e.toDict() for e in examples]
    assert set(back[0].inputs().keys()) == {"question"}


async def test_trace_export_cli(runs, relay_url, tmp_path):
    import asyncio

    from typer.testing import CliRunner

    from cli.main import app
    from pylon.home import identity_path

    me = Keys.load_or_create(identity_path())  # the CLI's identity (PYLON_HOME is per test)
    root = await publish_trace(runs[0], [relay_url], me, include_content=True, encrypt_to=me.public_key)
    local = tmp_path / "run2.json"
    runs[1].save(local)
    out = tmp_path / "ex.jsonl"
    res = await asyncio.to_thread(CliRunner().invoke, app, ["trace", "export", root, str(local), "-o", str(out),
                                                            "--signature", "question -> summary", "-r", relay_url])
    assert res.exit_code == 0, res.output
    assert "2 examples from 2 traces" in res.output
    assert [e.question for e in load_jsonl(out)] == ["What is a relay?", "What is a zap?"]
    none = await asyncio.to_thread(CliRunner().invoke, app, ["trace", "export", str(local), "-o", str(out),
                                                             "--signature", "nope"])
    assert none.exit_code != 0 and "no examples" in none.output and "Traceback" not in none.output
