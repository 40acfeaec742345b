"""`pylon ask` on a pseudo-terminal (pexpect): the progress display with elapsed time and
deadline, `--quiet`, and Ctrl-C (exit 130, the job cancelled with a kind-5 deletion)."""

from __future__ import annotations

import asyncio

import pytest

from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from tests.cli.stack import PYLON, cli_env, serving

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.timeout(300)


def _spawn(args: list[str], env: dict[str, str]) -> "pexpect.spawn":
    return pexpect.spawn(PYLON, args, env=env, dimensions=(24, 160), encoding="utf-8", timeout=90)


async def _expect(child: "pexpect.spawn", pattern: object, timeout: float = 90) -> int:
    # pexpect blocks; the relay runs on this event loop, so wait in a thread
    return await asyncio.to_thread(child.expect, pattern, timeout)


async def test_progress_shows_elapsed_time_and_deadline(relay_url, openai_double, tmp_path):
    openai_double.latency_s = 1.5  # long enough for the status line to be drawn while processing
    async with serving(relay_url, openai_double.base_url, tmp_path) as stack:
        env = cli_env(stack.home, PYLON_RELAYS=relay_url)
        child = _spawn(["ask", "hello tty", "--timeout", "30"], env)
        await _expect(child, r"processing by npub1[02-9ac-hj-np-z]{11}… · \d+\.\ds of 30s")
        await _expect(child, "This is the OpenAI double answering the prompt: hello tty")
        await _expect(child, r"✓ npub1[02-9ac-hj-np-z]{11}… · double-model")
        await _expect(child, pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert "……" not in child.before + (child.after if isinstance(child.after, str) else "")

        child = _spawn(["ask", "quiet one", "--quiet"], env)
        await _expect(child, pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert child.before.strip() == "This is the OpenAI double answering the prompt: quiet one"


async def test_ctrl_c_cancels_the_job(relay_url, tmp_path):
    home = tmp_path / "home"
    child = _spawn(["ask", "nobody will answer", "--timeout", "60"], cli_env(home, PYLON_RELAYS=relay_url))
    await _expect(child, r"waiting for a provider · \d+\.\ds of 60s")
    child.sendintr()  # Ctrl-C through the terminal's line discipline
    await _expect(child, "cancel")
    await _expect(child, pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 and "Traceback" not in child.before
    async with RelayPool([relay_url]) as pool:
        deletions = await pool.query([Filter.of(kinds=[5])], timeout=5)
    assert len(deletions) == 1  # the cancellation was published
