"""`pylon trace publish|show` against a real relay (the CLI runs in a worker thread with its
own event loop while the relay keeps serving on the test's loop)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from test_graph import sample_graph

FIXTURE = Path(__file__).parent / "data" / "qa_pipeline.dsrs.jsonl"
runner = CliRunner()


async def invoke(*args: str):
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def test_publish_a_dsrs_file_and_show_it(relay_url):
    res = await invoke("trace", "publish", str(FIXTURE), "--relay", relay_url, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["events"] == 9 and out["tokens"] == 211 and out["content"] == "hashes"
    shown = await invoke("trace", "show", out["root_event_id"], "--relay", relay_url)
    assert shown.exit_code == 0, shown.output
    assert "qa_pipeline" in shown.output and "pipeline.answer.verifier" in shown.output
    assert "140+12 tok" in shown.output and "missing field `verdict`" in shown.output
    as_json = await invoke("trace", "show", out["root_event_id"], "--relay", relay_url, "--json")
    assert json.loads(as_json.output)["trace_id"] == "01JDSRS0TRACE0FIXTURE00001"


async def test_publish_a_recorded_graph_with_content_encrypted_to_self(relay_url, tmp_path):
    path = tmp_path / "run.json"
    sample_graph().save(path)
    res = await invoke("trace", "publish", str(path), "-r", relay_url, "--include-content",
                       "--encrypt-to-self", "--json")
    assert res.exit_code == 0, res.output
    root_id = json.loads(res.output)["root_event_id"]
    shown = await invoke("trace", "show", root_id, "-r", relay_url, "--json")
    graph = json.loads(shown.output)
    p1 = next(n for n in graph["nodes"] if n["id"] == "p1")
    assert p1["inputs"]["question"]["content"] == "what?"  # our own identity decrypts it
    tree = await invoke("trace", "show", root_id, "-r", relay_url)
    assert "42 msat" in tree.output and "job aaaaaaaaaaaa" in tree.output


async def test_bad_inputs_get_one_red_line(tmp_path, relay_url):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"hello\": 1}")
    res = await invoke("trace", "publish", str(bad), "-r", relay_url)
    assert res.exit_code != 0 and "neither a Pylon trace graph nor a dsrs JSONL trace" in res.output
    res = await invoke("trace", "publish", str(tmp_path / "missing.json"), "-r", relay_url)
    assert res.exit_code != 0 and "no such trace file" in res.output
    res = await invoke("trace", "show", "xyz", "-r", relay_url)
    assert res.exit_code != 0 and "64 hex" in res.output
    res = await invoke("trace", "show", "e" * 64, "-r", relay_url)
    assert res.exit_code != 0 and "no relay has the trace root event" in res.output
    res = await invoke("trace", "publish", str(FIXTURE), "-r", relay_url, "--encrypt-to-self")
    assert res.exit_code != 0 and "--include-content" in res.output
