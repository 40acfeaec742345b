"""`pylon serve --workers N`: N provider processes under one identity, one job store, no job twice.

Why processes: a provider's cost per job is CPU in one Python event loop (signatures, JSON,
SQLite), so one process tops out at one core however many the host has; N processes on
N cores take up to N times the jobs in front of the same backend(s), less what every worker
spends receiving every request (figures: docs/OPERATING.md, bench/workers.py).

How the jobs are split:

* every worker is a whole `Provider` of the same configuration and identity with its own relay
  connections and its own subscription: each sees every request;
* each request has a preferred worker, by its id (`PreferredIntake`: the id's first 32 bits
  modulo N), which takes it at once; the others look again `OVERFLOW_DELAY_S` later and take
  it only if it is still unknown to the store (its worker is dead, restarting or too far
  behind). So workers split the jobs evenly without talking to each other, and the losers of a
  request spend one primary-key SELECT on it instead of parsing it and racing for the write lock;
* the shared SQLite job store decides who runs one: `JobStore.record_seen` (INSERT OR IGNORE,
  `claimed_by` = the worker's id) lands for exactly one worker, which runs the job; any other
  gets "already known" and drops it. So no job runs twice, whatever the timing;
* everything a job goes through afterwards — quote, invoice, waiting for the payment, running,
  the sealed result's key for sale, a refund — is done by the job's owner only (refund
  requests are claimed by one conditional UPDATE, whoever reads them first, who then owns the
  refund until it is paid);
* a worker that exits (crash, SIGKILL, OOM) leaves its jobs claimed by a dead pid: another
  worker's `take_over` check (every `TAKEOVER_INTERVAL_S`), or the replacement worker's start-up
  recovery, moves them to itself in one write transaction and resumes them exactly as a
  restarted single provider resumes its own (pylon.provider.jobstore.recover): a job it was
  running is run again once, a stored result is republished, an awaited payment is watched
  again, a paid job is served. Ownership moves only when the owner's pid is gone
  (pylon.provider.claims), never on a timeout, so a slow worker is never doubled.

The `Supervisor` starts the N worker processes, passes each its settings on stdin (secrets
never on a command line), restarts one that dies (backoff 0.5 s doubling to 30 s, reset after
a minute of uptime), forwards SIGTERM/SIGINT (drain; a second one: stop now) and
SIGUSR1/SIGUSR2/SIGHUP (pause, resume, reload) to all of them, kills a serving worker whose
event loop has sent no heartbeat for `WATCHDOG_S` (hung or stopped: its jobs are then taken
over like a crashed worker's), and gives up with the worker's exit code when a worker fails
before it ever served (a configuration error: said once, by the worker, in one line: worker 0
starts first, the others once it serves). Workers watch their parent: one whose supervisor
vanished drains and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from typing import TYPE_CHECKING, AsyncIterator, Sequence

from pylon.provider.drain import PAUSED_REASON

if TYPE_CHECKING:
    from pylon.nostr.event import Event
    from pylon.provider.jobstore import Takeover
    from pylon.provider.provider import Provider

log = logging.getLogger("pylon.provider.workers")

OVERFLOW_DELAY_S = 0.25  # a request's other workers wait this long for its preferred one
TAKEOVER_INTERVAL_S = 1.0  # how often a worker looks for exited workers' jobs (and its parent)
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a worker up this long restarts with the shortest backoff again
WATCHDOG_S = 30.0  # a serving worker whose event loop sent no heartbeat this long is killed (then restarted)
READY_FD_ENV = "PYLON_WORKER_READY_FD"  # the worker writes "ready\n" here once it serves
FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


# ---------------------------------------------------------------------------- in a worker
class PreferredIntake:
    """The provider's intake gate in worker `slot` of `count`: True for the requests this worker
    is preferred for; any other request is looked at again after `delay_s` and passed on only
    if no worker has recorded it by then (see the module docstring)."""

    def __init__(self, provider: "Provider", slot: int, count: int, *, delay_s: float = OVERFLOW_DELAY_S) -> None:
        if not 0 <= slot < count:
            raise ValueError("slot must be in range(count)")
        self.provider, self.slot, self.count, self.delay_s = provider, slot, count, delay_s
        self.overflow = 0  # requests taken for another worker (its worker dead or behind)
        self._passing: str | None = None

    def preferred(self, event_id: str) -> int:
        return int(event_id[:8], 16) % self.count

    def __call__(self, event: "Event") -> bool:
        if event.id == self._passing:
            return True
        try:
            mine = self.preferred(event.id) == self.slot
        except ValueError:  # not a hex id (a relay would not send one): decide as usual
            return True
        if not mine:
            asyncio.get_running_loop().call_later(self.delay_s, self._look_again, event)
        return mine

    def _look_again(self, event: "Event") -> None:
        provider, store = self.provider, self.provider.store
        if store is None or event.id in provider._jobs or not provider.accepting:
            return  # (draining or paused: its preferred worker already said so, once)
        try:
            if store.status(event.id) is not None:
                return  # the preferred worker has it (the usual case)
        except sqlite3.Error:
            pass  # let the intake decide; its insert is the claim anyway
        self.overflow += 1
        self._passing = event.id
        try:
            provider._on_request(event)
        except Exception:  # as the provider's listener does: one bad event never stops intake
            log.exception("failed to handle event %s", event.id[:12])
        finally:
            self._passing = None


@contextlib.asynccontextmanager
async def worker_duties(provider: "Provider", *, parent_pid: int | None = None,
                        interval_s: float = TAKEOVER_INTERVAL_S) -> AsyncIterator[None]:
    """Inside `provider.running()`: take over the jobs of workers that exit, and stop (SIGTERM
    to ourselves: the usual drain) when the supervisor `parent_pid` is gone."""
    task = asyncio.create_task(_duties(provider, parent_pid, interval_s), name="worker:duties")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _duties(provider: "Provider", parent_pid: int | None, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        heartbeat()
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("the supervisor (pid %d) is gone: this worker drains and stops", parent_pid)
            parent_pid = None
            os.kill(os.getpid(), signal.SIGTERM)
        store = provider.store
        draining = not provider.accepting and provider.closed_reason != PAUSED_REASON
        if store is None or draining:  # whoever stays takes them (paused: jobs taken still finish)
            continue
        try:
            taken = store.take_over()
        except sqlite3.Error as exc:  # busy past the timeout: the next round tries again
            log.warning("take-over check skipped: %s", exc)
            continue
        if taken is not None:
            resume_taken(provider, taken)


def resume_taken(provider: "Provider", taken: "Takeover") -> None:
    """Resume what an exited worker left, as a restarted provider resumes its own jobs."""
    log.warning("took over %d unfinished jobs of an exited worker", len(taken.rows))
    for row in taken.rows:
        provider._resume(row)
    keys = {k[0]: k for k in taken.key_invoices}
    if provider.key_sales is not None:  # hold invoices locked but not settled, expired or not
        ids = set(taken.ids)
        keys.update((h[0], h) for h in provider.key_sales.open_holds() if h[0] in ids)
    for request_id, payment_hash, expires_at in keys.values():
        provider._spawn(provider._watch_key_payment_of(request_id, payment_hash, expires_at))
    if taken.refunds_paying and provider.refunds is not None:
        provider._spawn(provider.refunds.resume())


_beat_fd: int | None = None  # the pipe to the supervisor, after the ready line


def signal_ready() -> None:
    """Tell the supervisor this worker is serving (a no-op when not started by one); the same
    pipe then carries the heartbeats (`heartbeat`)."""
    global _beat_fd
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.set_blocking(int(fd), False)  # a heartbeat never blocks the event loop
        os.write(int(fd), b"ready\n")
        _beat_fd = int(fd)
    except (OSError, ValueError):
        pass


def heartbeat() -> None:
    """One line to the supervisor: this worker's event loop is turning (its watchdog kills a
    worker silent for `WATCHDOG_S`, so a hung worker's jobs are taken over)."""
    global _beat_fd
    if _beat_fd is None:
        return
    try:
        os.write(_beat_fd, b"beat\n")
    except BlockingIOError:
        pass  # the supervisor is behind reading: the next beat will do
    except OSError:  # the supervisor is gone (the parent check handles that)
        with contextlib.suppress(OSError):
            os.close(_beat_fd)
        _beat_fd = None


# ---------------------------------------------------------------------------- the supervisor
class WorkerFailed(Exception):
    """A worker exited before it ever served: the configuration is wrong, restarting won't help."""

    def __init__(self, slot: int, code: int) -> None:
        super().__init__(f"worker {slot} exited with {code} before serving")
        self.slot, self.code = slot, code


class Supervisor:
    """Runs `count` copies of `command` (each gets `payload` on stdin and PYLON_WORKER_SLOT),
    keeps them running, forwards signals; `run()` returns the exit code for the CLI."""

    def __init__(self, count: int, command: Sequence[str], payload: bytes, *,
                 env: dict[str, str] | None = None, min_backoff_s: float = MIN_BACKOFF_S,
                 max_backoff_s: float = MAX_BACKOFF_S, watchdog_s: float = WATCHDOG_S) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count
        self.command = list(command)
        self.payload = payload
        self.env = dict(os.environ if env is None else env)
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.watchdog_s = watchdog_s
        self.killed_silent = 0  # workers the watchdog killed
        self._pipes: set[asyncio.Future[None]] = set()
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self.paused = False  # `pylon serve pause` (SIGUSR1) until resume: replacements are paused too
        self._stopping = asyncio.Event()
        self._served = {k: asyncio.Event() for k in range(count)}  # set once the slot's worker served
        self._signals = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.returncode is None]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_stop_signal)
        for sig in FORWARDED:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._forward, sig)
        # worker 0 first: a configuration error is said once (by it), not by N workers at once
        slots = [asyncio.create_task(self._keep(0), name="worker:0")]
        first = asyncio.create_task(self._served[0].wait())
        await asyncio.wait({slots[0], first}, return_when=asyncio.FIRST_COMPLETED)
        first.cancel()
        if self._served[0].is_set() and not self._stopping.is_set():
            slots += [asyncio.create_task(self._keep(k), name=f"worker:{k}") for k in range(1, self.count)]
        code = 0
        try:
            for done in asyncio.as_completed(slots):
                try:
                    await done
                except WorkerFailed as exc:
                    if not self._stopping.is_set():
                        log.error("worker %d failed before serving (exit %d): stopping all workers", exc.slot,
                                  exc.code)
                        code = 128 - exc.code if exc.code < 0 else exc.code or 1  # killed by a signal: 128 + it
                        self.stop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, *FORWARDED):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            for proc in self.procs.values():  # only after a bug above: never leave workers behind
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            for reading in list(self._pipes):
                reading.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
        return code

    def stop(self) -> None:
        """Drain every worker (SIGTERM) and end `run()` once they have exited."""
        self._stopping.set()
        self._forward(signal.SIGTERM)

    def _on_stop_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping %d workers (they drain; a second signal stops them at once)", len(self.pids))
        self.stop()  # the second one reaches the workers as their second signal: stop now

    def _forward(self, sig: int) -> None:
        if sig in (signal.SIGUSR1, signal.SIGUSR2):  # a worker started later must follow too
            self.paused = sig == signal.SIGUSR1
        for proc in list(self.procs.values()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _keep(self, slot: int) -> None:
        """Slot `slot`'s worker, restarted whenever it exits until we stop."""
        backoff = self.min_backoff_s
        served = False
        while not self._stopping.is_set():
            started = time.monotonic()
            proc, ready, beat = await self._spawn(slot)
            code = await self._wait(slot, proc, ready, beat)
            try:  # the pipe closes with the worker: its ready line, if any, is there by now
                served = await asyncio.wait_for(ready, 2.0) or served
            except (asyncio.TimeoutError, OSError):
                ready.cancel()
            if self._stopping.is_set():
                return
            if not served:
                raise WorkerFailed(slot, code)
            self.restarts += 1
            if time.monotonic() - started >= STABLE_S:
                backoff = self.min_backoff_s
            log.warning("worker %d (pid %d) exited with %d; restarting it in %.1f s", slot, proc.pid, code, backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _wait(self, slot: int, proc: asyncio.subprocess.Process, ready: "asyncio.Future[bool]",
                    beat: list[float]) -> int:
        """The worker's exit code; a serving worker silent for `watchdog_s` (its event loop
        stuck, or the process stopped) is SIGKILLed on the way, so its jobs are taken over."""
        exited = asyncio.ensure_future(proc.wait())
        while True:
            done, _ = await asyncio.wait({exited}, timeout=min(1.0, self.watchdog_s / 4))
            if done:
                return exited.result()
            silent = time.monotonic() - beat[0]
            if ready.done() and not ready.cancelled() and ready.result() and silent > self.watchdog_s:
                log.error("worker %d (pid %d) sent no heartbeat for %.0f s: killed, its jobs go to the others",
                          slot, proc.pid, silent)
                self.killed_silent += 1
                beat[0] = float("inf")  # once
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def _spawn(self, slot: int) -> tuple[asyncio.subprocess.Process, "asyncio.Future[bool]", list[float]]:
        read_fd, write_fd = os.pipe()
        env = dict(self.env, PYLON_WORKER_SLOT=str(slot), **{READY_FD_ENV: str(write_fd)})
        try:
            # own process group: a terminal's Ctrl-C reaches the supervisor only, which forwards it once
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, env=env, pass_fds=(write_fd,), process_group=0)
        finally:
            os.close(write_fd)
        self.procs[slot] = proc
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        beat = [time.monotonic()]  # when the worker last said something on its pipe
        reading = asyncio.ensure_future(_read_pipe(read_fd, ready, beat))
        self._pipes.add(reading)  # a reference, so the task is not collected while it reads
        reading.add_done_callback(self._pipes.discard)
        served = self._served[slot]

        def on_ready(f: "asyncio.Future[bool]") -> None:
            if f.cancelled() or f.exception() is not None or not f.result():
                return
            served.set()
            if self.paused and proc.returncode is None:  # a replacement started during a pause
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR1)
        ready.add_done_callback(on_ready)
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(self.payload)
            await proc.stdin.drain()
            proc.stdin.close()
        log.info("worker %d started (pid %d)", slot, proc.pid)
        return proc, ready, beat


async def _read_pipe(fd: int, ready: "asyncio.Future[bool]", beat: list[float]) -> None:
    """Read a worker's pipe until it closes (the worker exited): `ready` becomes True at its
    ready line (False if it closes without one); `beat[0]` is when the last line came."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while line := await reader.readline():
            if beat[0] != float("inf"):
                beat[0] = time.monotonic()
            if line.startswith(b"ready") and not ready.done():
                ready.set_result(True)
    finally:
        transport.close()
        if not ready.done():
            ready.set_result(False)

