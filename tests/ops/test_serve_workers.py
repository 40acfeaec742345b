"""`pylon serve --workers 2` as a real process tree (supervisor + two worker processes) on the
embedded nexus relay, the real SQLite job store and the OpenAI double (which counts the backend
calls): the workers split the jobs and run each once; a worker SIGKILLed in the middle of jobs
(free, then paid with the dev wallet) loses none of them: the supervisor starts a new worker,
the jobs are taken over and answered, and the customer paid exactly what the provider got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest

from pylon.customer.client import PylonClient
from pylon.nostr.keys import Keys
from tests.e2e.helpers import stored, wait_for
from tests.faults.harness import PYLON, REPO, Tally, ask_all, cli_env
from tests.payments.helpers import paying_customer

pytestmark = pytest.mark.timeout(180)
PRICE = 1_000
FUND = 100_000


def _home(tmp_path: Path) -> tuple[Keys, Path]:
    home = tmp_path / "provider-home"
    home.mkdir()
    keys = Keys.generate()
    keys.save(home / "identity.key")
    return keys, home


class WorkersProc:
    """`pylon serve --workers N` in its own session; reads each worker's "serving as" line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []

    async def start(self, workers: int, timeout: float = 60.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=str(REPO), env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        await self.serving(workers, timeout)

    async def serving(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` "serving as" lines (one per worker start) have been printed."""
        assert self.proc is not None and self.proc.stdout is not None
        while sum("serving as" in line for line in self.lines) < count:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert line, f"pylon serve --workers ended (exit {self.proc.returncode}): {self.lines}"
            self.lines.append(line.decode().strip())

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)  # the supervisor drains its workers
        try:
            return await asyncio.wait_for(self.proc.wait(), 40)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
            return None


def _rows(home: Path) -> list[tuple[str, str, str, int]]:
    """(request id, status, claimed_by, attempts) of every job in the shared store."""
    with contextlib.closing(sqlite3.connect(home / "provider.sqlite")) as db:
        return db.execute("SELECT request_id, status, claimed_by, attempts FROM jobs").fetchall()


def _children(pid: int) -> list[int]:
    """The supervisor's worker processes."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(entry.name))
    return sorted(out)


def _pid(worker: str) -> int:
    return int(worker.split(":")[1])


def _serve_argv(relay_url: str, backend_url: str, *extra: str) -> list[str]:
    return [PYLON, "serve", "--workers", "2", "--relay", relay_url, "--backend", backend_url,
            "--max-tokens-cap", "16", "--drain-timeout", "5", *extra]


async def _ask(client: PylonClient, keys: Keys, n: int) -> list:
    return await asyncio.gather(*(client.ask(f"question {i}", provider=keys.public_key, timeout=90)
                                  for i in range(n)))


async def test_two_workers_split_the_jobs_and_run_each_once(relay_url, openai_double, tmp_path):
    keys, home = _home(tmp_path)
    openai_double.latency_s = 0.05
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url), cli_env(home))
    await serve.start(workers=2)
    try:
        assert {line[-len("[worker 1/2]"):] for line in serve.lines} == {"[worker 1/2]", "[worker 2/2]"}
        n = 40
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            answers = await _ask(client, keys, n)
        assert all(a.text for a in answers)
    finally:
        await serve.stop()
    rows = _rows(home)
    assert len(rows) == n and {r[1] for r in rows} == {"done"}
    assert len(openai_double.requests) == n  # each job reached the backend exactly once
    assert all(r[3] == 1 for r in rows)
    owners = Counter(r[2] for r in rows)
    assert len(owners) == 2, owners  # both workers took jobs
    results = await stored(relay_url, kinds=[6050], authors=[keys.public_key])
    assert len(results) == n and len({e.first_tag("e")[1] for e in results}) == n  # one result per job


async def test_two_workers_in_front_of_the_cpu_vllm(relay_url, vllm_server, tmp_path):
    """The same split against the real (CPU) vLLM: every job answered, each run once."""
    keys, home = _home(tmp_path)
    serve = WorkersProc(_serve_argv(relay_url, vllm_server.base_url), cli_env(home))
    await serve.start(workers=2, timeout=120)
    n = 8
    try:
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            answers = await asyncio.gather(*(client.ask(f"Count to {i}.", provider=keys.public_key, max_tokens=8,
                                                        temperature=0.0, timeout=120) for i in range(n)))
        assert all(a.model == vllm_server.model for a in answers)
    finally:
        await serve.stop()
    rows = _rows(home)
    assert len(rows) == n and {r[1] for r in rows} == {"done"} and all(r[3] == 1 for r in rows)
    results = await stored(relay_url, kinds=[6050], authors=[keys.public_key])
    assert len(results) == n and len({e.first_tag("e")[1] for e in results}) == n


async def test_a_worker_killed_mid_jobs_loses_none(relay_url, openai_double, tmp_path):
    keys, home = _home(tmp_path)
    openai_double.latency_s = 2.0  # every job is in the backend when the worker dies
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url), cli_env(home))
    await serve.start(workers=2)
    n = 12
    try:
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            asks = asyncio.ensure_future(_ask(client, keys, n))
            await wait_for(lambda: len(openai_double.requests) >= n, timeout=60, what="every job running")
            owners = Counter(r[2] for r in _rows(home))
            victim, lost = owners.most_common(1)[0]  # the worker holding the most jobs
            os.kill(_pid(victim), signal.SIGKILL)
            answers = await asyncio.wait_for(asks, 120)
            await serve.serving(3)  # the supervisor started a new worker in its place
        assert len(answers) == n and all(a.text for a in answers)
    finally:
        await serve.stop()
    rows = _rows(home)
    assert {r[1] for r in rows} == {"done"} and len(rows) == n
    assert victim not in {r[2] for r in rows}  # every job of the dead worker moved to a live one
    # the killed worker's jobs ran once more (mid-generation), nobody else's did
    assert len(openai_double.requests) == n + lost
    assert sorted(r[3] for r in rows) == [1] * (n - lost) + [2] * lost
    results = await stored(relay_url, kinds=[6050], authors=[keys.public_key])
    assert len({e.first_tag("e")[1] for e in results}) == n and len(results) == n


async def test_a_stalled_worker_s_requests_go_to_the_other_once(relay_url, openai_double, tmp_path):
    """A worker that stops reading (SIGSTOP: alive, so nothing of its is taken over) leaves the
    requests it is preferred for to the other worker after the overflow delay; resumed, it finds
    them taken and runs none of them again."""
    keys, home = _home(tmp_path)
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url), cli_env(home))
    await serve.start(workers=2)
    n = 16
    stalled = None
    try:
        assert serve.proc is not None
        workers = _children(serve.proc.pid)
        assert len(workers) == 2, workers
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            await _ask(client, keys, 4)
            stalled = workers[0]
            os.kill(stalled, signal.SIGSTOP)
            answers = await _ask(client, keys, n)
            assert all(a.text for a in answers)
            os.kill(stalled, signal.SIGCONT)
            stalled = None
            await _ask(client, keys, 4)  # the resumed worker has read its backlog by now
    finally:
        if stalled is not None:
            os.kill(stalled, signal.SIGCONT)
        await serve.stop()
    rows = _rows(home)
    assert len(rows) == n + 8 and {r[1] for r in rows} == {"done"}
    assert len(openai_double.requests) == n + 8  # nothing ran twice
    owner = {r[0]: _pid(r[2]) for r in rows}
    assert {owner[a.job_id] for a in answers} == {workers[1]}  # the live worker took every stalled-time job


async def test_a_hung_worker_is_killed_by_the_watchdog_and_its_jobs_taken_over(relay_url, openai_double, tmp_path):
    """A worker stopped (SIGSTOP: alive, its jobs claimed, nothing taken over) while its jobs are
    in the backend: the supervisor's watchdog (3 s here) kills it, a new worker starts, the jobs
    are taken over and answered."""
    keys, home = _home(tmp_path)
    openai_double.latency_s = 2.0
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url),
                        cli_env(home, PYLON_WORKER_WATCHDOG_S="3"))
    await serve.start(workers=2)
    n = 8
    stopped = None
    try:
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            asks = asyncio.ensure_future(_ask(client, keys, n))
            await wait_for(lambda: len(openai_double.requests) >= n, timeout=60, what="every job running")
            victim, lost = Counter(r[2] for r in _rows(home)).most_common(1)[0]
            stopped = _pid(victim)
            os.kill(stopped, signal.SIGSTOP)
            answers = await asyncio.wait_for(asks, 120)
            await serve.serving(3)  # a replacement worker
        assert all(a.text for a in answers)
        with pytest.raises(ProcessLookupError):
            os.kill(stopped, 0)  # killed, not merely resumed
        stopped = None
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        await serve.stop()
    rows = _rows(home)
    assert {r[1] for r in rows} == {"done"} and victim not in {r[2] for r in rows}
    assert len(openai_double.requests) == n + lost  # the hung worker's jobs ran once more, no others


async def test_a_worker_killed_during_paid_jobs_costs_the_customer_nothing(relay_url, openai_double, dev_ledger,
                                                                          tmp_path):
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    keys, home = _home(tmp_path)
    openai_double.latency_s = 2.0  # paid, then in the backend when the worker dies
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url, "--price-msat", str(PRICE),
                                    "--wallet", dev_ledger.uri("provider")), cli_env(home))
    await serve.start(workers=2)
    asks_n = 6
    tally = Tally("a worker killed during paid jobs")
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            asks = asyncio.ensure_future(ask_all(client, asks_n, tally, timeout=90, provider=keys.public_key))
            await wait_for(lambda: len(openai_double.requests) >= asks_n, timeout=60, what="every paid job running")
            victim = Counter(r[2] for r in _rows(home)).most_common(1)[0][0]
            os.kill(_pid(victim), signal.SIGKILL)
            await asyncio.wait_for(asks, 120)
    finally:
        await serve.stop()
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()  # paid == received, nothing paid without an answer
    assert tally.answered == asks_n
    assert {r[1] for r in _rows(home)} == {"done"}


async def test_pause_and_resume_reach_every_worker(relay_url, openai_double, tmp_path):
    """`pylon serve pause|resume|status` signal the supervisor, which forwards to each worker:
    while paused every request is refused (whichever worker it prefers; a worker restarted
    during the pause is paused too), after resume served."""
    from tests.ops.test_serve_lifecycle import _announced, _pylon, wait_for_async

    keys, home = _home(tmp_path)
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url), cli_env(home))
    await serve.start(workers=2)
    try:
        assert serve.proc is not None
        status = await asyncio.to_thread(_pylon, home, "serve", "status")
        assert str(serve.proc.pid) in status.stdout  # the supervisor holds the lock
        out = await asyncio.to_thread(_pylon, home, "serve", "pause")
        assert out.returncode == 0, out.stderr
        await wait_for_async(lambda: _announced(relay_url, keys.public_key), want=False)
        await asyncio.sleep(0.5)  # both workers have the signal (forwarded at once)
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            refusals = await asyncio.gather(*(client.ask(f"paused {i}", provider=keys.public_key, timeout=30)
                                              for i in range(6)), return_exceptions=True)
            assert all(isinstance(r, Exception) and "paused" in str(r) for r in refusals), refusals
            os.kill(_children(serve.proc.pid)[0], signal.SIGKILL)  # a worker dies during the pause
            await serve.serving(3)
            await asyncio.sleep(0.5)  # its replacement was paused as soon as it served
            refusals = await asyncio.gather(*(client.ask(f"still paused {i}", provider=keys.public_key, timeout=30)
                                              for i in range(6)), return_exceptions=True)
            assert all(isinstance(r, Exception) and "paused" in str(r) for r in refusals), refusals
            out = await asyncio.to_thread(_pylon, home, "serve", "resume")
            assert out.returncode == 0, out.stderr
            await wait_for_async(lambda: _announced(relay_url, keys.public_key), want=True)
            await asyncio.sleep(0.5)
            answers = await _ask(client, keys, 6)
        assert all(a.text for a in answers)
    finally:
        await serve.stop()
    assert len(openai_double.requests) == 6


def test_a_worker_that_cannot_start_is_said_once_and_ends_the_serve(tmp_path):
    """A configuration only a worker finds wrong (a dev wallet in a missing folder): one error,
    from the first worker, the supervisor's exit code is the worker's, no restart loop."""
    import subprocess

    out = subprocess.run([PYLON, "serve", "--workers", "3", "--relay", "ws://127.0.0.1:9", "--backend",
                          "http://127.0.0.1:9/v1", "--price-msat", "1000", "--wallet",
                          f"dev://{tmp_path}/missing/ledger.sqlite?account=p"],
                         env=cli_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("error: dev wallet folder") == 1, out.stderr
    assert "Traceback" not in out.stderr and "worker 1 started" not in out.stderr


async def test_a_worker_killed_while_its_invoices_wait_loses_no_payment(relay_url, openai_double, dev_ledger,
                                                                      tmp_path):
    """Paid jobs waiting for their invoices (the customer pays 3 s after each quote) when their
    worker is SIGKILLed: the worker taking them over watches the invoices, sees them paid and
    serves them; the customer paid exactly what the provider received, each job ran once."""
    dev_ledger.fund("customer", FUND)
    cw, pw = dev_ledger.wallet("customer"), dev_ledger.wallet("provider")
    pay = cw.pay_invoice

    async def slow_pay(bolt11: str, **kwargs):
        await asyncio.sleep(3.0)  # the worker that quoted dies meanwhile
        return await pay(bolt11, **kwargs)

    cw.pay_invoice = slow_pay  # the real dev wallet, paying later
    keys, home = _home(tmp_path)
    serve = WorkersProc(_serve_argv(relay_url, openai_double.base_url, "--price-msat", str(PRICE),
                                    "--wallet", dev_ledger.uri("provider")), cli_env(home))
    await serve.start(workers=2)
    asks_n = 6
    tally = Tally("a worker killed while its invoices wait")
    try:
        async with paying_customer(relay_url, cw, max_msat=5_000) as client:
            asks = asyncio.ensure_future(ask_all(client, asks_n, tally, timeout=90, provider=keys.public_key))
            await wait_for(lambda: sum(r[1] == "awaiting_payment" for r in _rows(home)) >= asks_n, timeout=60,
                           what="every job waiting for its payment")
            victim, waiting = Counter(r[2] for r in _rows(home)).most_common(1)[0]
            os.kill(_pid(victim), signal.SIGKILL)
            await asyncio.wait_for(asks, 120)
    finally:
        await serve.stop()
    await tally.settle(cw, pw, fund=FUND, price=PRICE)
    tally.check()  # paid == received, nothing paid without an answer
    assert tally.answered == asks_n and waiting >= 1
    rows = _rows(home)
    assert {r[1] for r in rows} == {"done"} and victim not in {r[2] for r in rows}
    assert len(openai_double.requests) == asks_n  # none ran twice (none had started)


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_a_bad_workers_value_is_one_line(value, tmp_path):
    import subprocess

    out = subprocess.run([PYLON, "serve", f"--workers={value}"], env=cli_env(tmp_path / "home"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--workers" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_serve_help_shows_workers(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--help"], env=cli_env(tmp_path / "home"),
                         capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert out.returncode == 0 and "--workers" in out.stdout
