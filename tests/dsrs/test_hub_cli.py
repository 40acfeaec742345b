"""`pylon hub publish|list|pull` against the real embedded relay (the CLI runs in a worker
thread with its own loop while the relay serves on the test's loop)."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
STATE = {"answer": {"demos": [{"question": "2+2?", "answer": "4"}], "lm": None, "traces": [], "train": [],
                    "signature": {"instructions": "Answer.", "fields": []}}}


async def invoke(*args: str):
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def test_publish_list_pull(relay_url, tmp_path):
    src = tmp_path / "qa.json"
    src.write_text(json.dumps(STATE))
    res = await invoke("hub", "publish", str(src), "--name", "qa", "--version", "1.0", "--metric", "em",
                       "--score", "0.75", "--model", "tiny", "--cost-msat", "3000", "-r", relay_url, "--json")
    assert res.exit_code == 0, res.output
    published = json.loads(res.output)
    assert published["version"] == "1.0" and published["score"] == 0.75
    again = await invoke("hub", "publish", str(src), "--name", "qa", "--version", "0.9", "-r", relay_url)
    assert again.exit_code != 0 and "already published" in again.output and "Traceback" not in again.output
    listed = await invoke("hub", "list", "--author", published["author"], "-r", relay_url)
    assert listed.exit_code == 0 and "qa 1.0 · em 0.75 · 3000 msat" in listed.output
    out = tmp_path / "pulled.json"
    pulled = await invoke("hub", "pull", "qa", "-o", str(out), "-r", relay_url)  # default author: me
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(out.read_text()) == STATE
    missing = await invoke("hub", "pull", "nope", "-o", str(out), "-r", relay_url)
    assert missing.exit_code != 0 and "no program 'nope'" in missing.output
