"""Live trace view: a program recorded with record_live (a real dspy.LM on the chat DOUBLE)
publishes ephemeral node events on the real embedded relay while `pylon trace watch` runs in
a real terminal (tmux, on a private socket) whose screen the test reads."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dspy
import pytest

from dsrs_bridge.live import LIVE_KIND, LiveModel, node_event
from dsrs_bridge.recorder import record
from pylon.nostr.keys import Keys

from test_recorder import Outer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")


class Terminal:
    """A detached tmux session on its own socket: start a command, read the screen."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.socket = f"pylon-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", "w", "-x", "200", "-y", "60",
                        f"cd {ROOT} && env {exports} {command}; sleep 30"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "w"],
                              capture_output=True, text=True).stdout

    def wait_for(self, *texts: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(t in screen for t in texts) or time.monotonic() > deadline:
                return screen
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def test_model_assembles_a_tree_from_events(chat_double):
    model = dspy.LM("openai/double", api_base=chat_double.base_url, api_key="k", cache=False)
    prog, keys = Outer(), Keys.generate()
    with dspy.context(lm=model, adapter=dspy.ChatAdapter()), record(prog) as graph:
        prog(question="What is a relay?")
    live = LiveModel()
    events = [node_event(keys, graph, n, "end") for n in graph.nodes]
    assert all(e.kind == LIVE_KIND == 23571 for e in events)
    assert all(live.apply(e) for e in events)
    forged = events[0].to_dict() | {"content": events[0].content.replace("Outer", "Evil")}
    from pylon.nostr.event import Event
    assert not live.apply(Event.from_dict(forged))
    (trace,) = live.traces.values()
    assert len(trace.nodes) == len(graph.nodes) and trace.totals()[0] > 0


async def test_trace_watch_shows_the_nodes_of_a_running_program(relay_url, chat_double, tmp_path):
    from dsrs_bridge.live import record_live

    keys = Keys.generate()
    home = tmp_path / "watch-home"
    home.mkdir()
    term = Terminal(f"{sys.executable} -m cli.main trace watch -r {relay_url} --author {keys.npub} --seconds 60",
                    {"PYLON_HOME": str(home), "COLUMNS": "200"})
    try:
        screen = await asyncio.to_thread(term.wait_for, "waiting for")
        assert "waiting for" in screen, screen
        await asyncio.sleep(0.5)  # the subscription is open once the view is drawn

        def run_program():
            model = dspy.LM("openai/double", api_base=chat_double.base_url, api_key="k", cache=False)
            prog = Outer()
            with dspy.context(lm=model, adapter=dspy.ChatAdapter()), \
                    record_live(prog, relays=[relay_url], keys=keys, interval_s=0.05) as graph:
                prog(question="What is a relay?")
            return graph

        graph = await asyncio.to_thread(run_program)
        # every node's end event, not only the root's "done": the events arrive in any order
        screen = await asyncio.to_thread(term.wait_for, "Outer", "inner.summarize", "answer.predict", "done",
                                         f"{len(graph.nodes)} nodes")
        assert "Outer" in screen and "inner.summarize" in screen and "done" in screen, screen
        lines = [line for line in screen.splitlines() if "tokens" in line]
        assert f"{len(graph.nodes)} nodes" in lines[0] and "0 tokens" not in lines[0]
    finally:
        term.close()
