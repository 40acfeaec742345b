"""The README's DSPy snippet runs as written: extracted from README.md and run as a script
(its own process, as a user would) against an embedded relay and a priced Provider on the
OpenAI DOUBLE serving "tiny-llama", paid from a dev wallet given through PYLON_WALLET. Only
the relay URL is replaced (the test's relay listens on a free port)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from dsrs_bridge.nostr_trace import fetch_trace

README = Path(__file__).resolve().parents[2] / "README.md"


def dspy_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## DSPy on the swarm"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


async def test_readme_dspy_snippet_runs_as_written(tmp_path, dev_ledger):
    from chat_double import chat_adapter_reply
    from nexus_relay import running_relay
    from pylon.nostr.keys import Keys
    from pylon.provider.backends.openai import OpenAIBackend
    from pylon.provider.provider import Provider
    from tests.peers.openai_double import OpenAIDouble

    snippet = dspy_snippet()
    assert "await" not in snippet.replace("asyncio.run", "")  # no top-level await
    double = OpenAIDouble(models=["tiny-llama"], reply=lambda body: chat_adapter_reply(body["messages"]))
    double.start_in_thread()
    backend = OpenAIBackend(double.base_url)
    dev_ledger.fund("customer", 100_000)
    try:
        async with running_relay(tmp_path / "relay.sqlite") as relay:
            provider = Provider([relay.url], backend, keys=Keys.generate(), models=["tiny-llama"], price_msat=1_000,
                                wallet=dev_ledger.wallet("provider"), db_path=tmp_path / "provider.sqlite")
            async with provider.running():
                script = tmp_path / "readme_snippet.py"
                script.write_text(snippet.replace("ws://127.0.0.1:7777", relay.url))
                env = dict(os.environ, PYLON_WALLET=dev_ledger.uri("customer"),
                           DSPY_CACHEDIR=str(tmp_path / "dspy-cache"), LITELLM_LOCAL_MODEL_COST_MAP="true")
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(script), env=env, cwd=str(README.parent),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await asyncio.wait_for(proc.communicate(), 120)
                assert proc.returncode == 0, err.decode()[-2000:]
                lines = out.decode().splitlines()
                assert lines[0].startswith("answer-") and lines[0].endswith("(1000 msat)")
                root_id = lines[-1].split()[-1]
                graph = await fetch_trace(root_id, [relay.url])
                assert any(n.role == "lm" for n in graph.nodes)
    finally:
        await backend.aclose()
        double.stop_thread()
    assert provider.stats.done == 1
