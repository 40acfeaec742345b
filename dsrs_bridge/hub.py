"""The SwarmHub behind a `pylon_lm`: shared clients, single-flight, one Budget, and closing.

Every copy of a pylon_lm (BootstrapFewShot, Refine and BestOfN make copies) shares one hub:

- one PylonClient per event loop (one RelayPool, one websocket per relay); sync callers —
  every dspy.Parallel / Evaluate thread — go through one background loop thread, so they all
  share one relay connection;
- one core `pylon.customer.budget.Budget` (the session budget `budget_msat`, the per-call cap
  `max_msat_per_call`) handed to every client: each job's bid is held before it is published
  and the payment's intent is committed in the receipts ledger in one transaction, so threads
  and copies together never spend more than the budget, and `spent_msat` is read back from
  that ledger (what the wallet paid, fees included, paid jobs that timed out too);
- single-flight: a request identical to one in flight on the same loop (same messages,
  sampling parameters, rollout_id and provider) is joined, not sent again (DSPy resubmits
  stragglers after 120 s; a second paid job for the same prompt is money lost);
- closing: `close()` cancels the calls in flight (a kind-5 cancellation is published for
  each), so every waiting thread raises at once, then stops the loop thread; it returns within
  about a second (two at most) even when the relay is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Sequence, TypeVar

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import Wallet

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOSE_GRACE_S = 0.8  # how long close() lets cancelled jobs publish their kind-5 cancellation


def lm_closed_error() -> BaseException:
    from pylon.customer.client import JobCancelled

    return JobCancelled("the pylon_lm was closed while this call was in flight; its job was cancelled")


class _LoopThread:
    """An event loop in a daemon thread: sync code submits coroutines and waits on them.

    Every submitted coroutine runs as a tracked task and every waiting thread holds a tracked
    future, so `stop()` can cancel the first and fail the second: no thread is left waiting
    on a loop that no longer runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._futures: set[concurrent.futures.Future] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pylon-lm-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:  # leave nothing pending behind ("Task was destroyed but it is pending!")
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.wait(pending, timeout=0.5))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        with self._lock:
            if self._stopping:
                coro.close()
                raise lm_closed_error()

            async def tracked() -> T:
                task = asyncio.current_task()
                assert task is not None
                self._tasks.add(task)
                try:
                    return await coro
                finally:
                    self._tasks.discard(task)

            future = asyncio.run_coroutine_threadsafe(tracked(), self.loop)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait; a call cut short by `stop()` raises JobCancelled."""
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise lm_closed_error() from None

    def stop(self, closer: Callable[[], Coroutine[Any, Any, Any]] | None = None,
             grace_s: float = CLOSE_GRACE_S) -> None:
        """Cancel every task in flight, run `closer` (bounded), stop the loop, fail waiters."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        if threading.current_thread() is self._thread:  # pragma: no cover - close() from a callback on the loop
            self.loop.call_soon(self.loop.stop)
            return

        async def shutdown() -> None:
            tasks = [t for t in self._tasks if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=grace_s / 2)
            if closer is not None:
                try:
                    async with asyncio.timeout(grace_s / 2):
                        await closer()
                except BaseException:  # best effort: the relay may be gone
                    log.debug("closing the background PylonClient did not finish", exc_info=True)

        if not self.loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=grace_s + 0.5)
            except BaseException:
                log.debug("background loop shutdown timed out", exc_info=True)
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # already closed
                pass
        self._thread.join(timeout=1.0)
        with self._lock:
            futures = list(self._futures)
        for future in futures:  # threads still waiting: release them now
            if not future.cancel() and not future.done():
                future.set_exception(lm_closed_error())


@dataclass(frozen=True)
class JobOptions:
    """What every job of one LM carries besides the prompt."""

    model: str
    provider: str | None = None
    timeout: float = 60.0
    encrypted: bool | None = None


def resolve_wallet(wallet: Wallet | str | None) -> Wallet | None:
    """A wallet object, a wallet URI, or None (then PYLON_WALLET, if set)."""
    if wallet is None:
        wallet = os.environ.get("PYLON_WALLET") or None
    if isinstance(wallet, str):
        from wallet import open_wallet

        return open_wallet(wallet)
    return wallet


class SwarmHub:
    """Shared PylonClients (one per event loop), single-flight, the Budget, and closing."""

    def __init__(self, relays: Sequence[str], *, keys: Any = None, wallet: Wallet | str | None = None,
                 max_msat_per_call: int | None = None, budget_msat: int | None = None,
                 client_factory: Callable[..., Any] | None = None) -> None:
        for name, value in (("max_msat_per_call", max_msat_per_call), ("budget_msat", budget_msat)):
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name} must be a non-negative integer number of millisats")
        self.relays = list(relays)
        self.keys = keys
        self.wallet = resolve_wallet(wallet)
        self.max_msat_per_call = max_msat_per_call
        self.budget_msat = budget_msat
        self._factory = client_factory
        self._budget: Any = None
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._starting: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future] = {}
        self._loop_jobs: dict[asyncio.AbstractEventLoop, set[asyncio.Task]] = {}
        self._thread: _LoopThread | None = None
        self.jobs_started = 0
        self.jobs_joined = 0
        self.history_msat = 0  # msats of the calls recorded in the history of this LM and its copies
        _HUBS.add(self)

    # -- money ------------------------------------------------------------------------------
    @property
    def budget(self) -> Any:
        """The core Budget every client of this hub shares (None without a wallet: nothing is paid)."""
        if self.wallet is None:
            return None
        with self._lock:
            if self._budget is None:
                from pylon.customer.budget import Budget
                from pylon.customer.defaults import DEFAULT_DAILY_BUDGET_MSAT, DEFAULT_MAX_MSAT
                from pylon.customer.ledger import Ledger

                # the money-safe defaults a PylonClient applies when none is given
                per_job = DEFAULT_MAX_MSAT if self.max_msat_per_call is None else self.max_msat_per_call
                self._budget = Budget(Ledger(), per_job_msat=per_job, daily_msat=DEFAULT_DAILY_BUDGET_MSAT,
                                      session_msat=self.budget_msat)
            return self._budget

    @property
    def spent_msat(self) -> int:
        """What this LM and its copies paid (amount + fee, pending payments included), from the ledger."""
        budget = self.budget
        return 0 if budget is None else budget.spent_session_msat()

    def bid_msat(self) -> int | None:
        """The most the next job may bid: the per-call cap, within what the budget has not
        spent or held (advisory: the binding check is the Budget's hold)."""
        caps = [] if self.max_msat_per_call is None else [self.max_msat_per_call]
        budget = self.budget
        if budget is not None and budget.session_msat is not None:
            caps.append(budget.session_room_msat())
        elif self.budget_msat is not None:
            caps.append(self.budget_msat)
        return min(caps) if caps else None

    # -- clients --------------------------------------------------------------------------
    def _new_client(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from pylon.customer.client import PylonClient

        return PylonClient(self.relays, keys=self.keys, wallet=self.wallet, max_msat=self.max_msat_per_call,
                           budget=self.budget)

    async def client(self) -> Any:
        """This event loop's started PylonClient (created on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is not None:
            return client
        with self._lock:
            self._reap_closed_loops()
            gate = self._starting.setdefault(loop, asyncio.Lock())
        async with gate:
            client = self._clients.get(loop)
            if client is None:
                client = self._new_client()
                await client.start()
                self._clients[loop] = client
        return client

    def _reap_closed_loops(self) -> None:
        for loop in [lp for lp in self._clients if lp.is_closed()]:
            self._clients.pop(loop, None)
            self._starting.pop(loop, None)
            self._loop_jobs.pop(loop, None)

    def background(self) -> _LoopThread:
        with self._lock:
            if self._thread is None:
                self._thread = _LoopThread()
            return self._thread

    # -- asking -----------------------------------------------------------------------------
    async def ask(self, key: str, messages: list[dict], params: dict[str, Any], opts: JobOptions) -> tuple[Any, bool]:
        """Run (or join) the job for `key`; returns (outcome, joined)."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        existing = self._inflight.get(slot)
        if existing is not None:
            with self._lock:
                self.jobs_joined += 1
            return await asyncio.shield(existing), True
        future: asyncio.Future = loop.create_future()
        self._inflight[slot] = future
        try:
            client = await self.client()
            with self._lock:
                self.jobs_started += 1
            job = asyncio.ensure_future(client.ask(messages, **params, provider=opts.provider,
                                                   timeout=opts.timeout, encrypted=opts.encrypted))
            jobs = self._loop_jobs.setdefault(loop, set())
            jobs.add(job)
            try:
                outcome = await job
            finally:
                jobs.discard(job)
            future.set_result(outcome)
            return outcome, False
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: joiners re-raise it, nobody else must
            raise
        finally:
            self._inflight.pop(slot, None)

    def stream(self, messages: list[dict], params: dict[str, Any], opts: JobOptions, client: Any) -> Any:
        return client.stream(messages, **params, provider=opts.provider, timeout=opts.timeout,
                             encrypted=opts.encrypted)

    # -- closing ------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel this loop's calls in flight and close its client (call from that loop)."""
        loop = asyncio.get_running_loop()
        jobs = [j for j in self._loop_jobs.pop(loop, set()) if not j.done()]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=CLOSE_GRACE_S)
        client = self._clients.pop(loop, None)
        self._starting.pop(loop, None)
        if client is not None:
            try:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await client.close()
            except TimeoutError:
                log.debug("closing the PylonClient timed out")

    def close(self) -> None:
        """Cancel the background loop's calls in flight (they raise JobCancelled), close its
        client and stop the loop thread. Returns within about a second (two at most). The hub stays usable:
        a later sync call starts a fresh loop thread.

        The budget's receipts ledger ends its writer thread too (its queued writes committed
        first); the ledger and the session stay, so a later call spends against the same
        session budget and starts a new writer."""
        with self._lock:
            thread, self._thread = self._thread, None
            budget = self._budget
        if thread is not None:
            client = self._clients.pop(thread.loop, None)
            self._starting.pop(thread.loop, None)
            self._loop_jobs.pop(thread.loop, None)
            thread.stop(client.close if client is not None else None)
        if budget is not None:
            budget.ledger.stop_writer()


_HUBS: "weakref.WeakSet[SwarmHub]" = weakref.WeakSet()


def close_all_hubs() -> None:
    """Close every hub's background loop (registered with atexit by dsrs_bridge.lm)."""
    for hub in list(_HUBS):
        hub.close()


def load(name: str, *, author: str, relays: Sequence[str], keys: Any = None, timeout: float = 5.0) -> dict[str, Any]:
    """The program hub's `load` (the issue's `dsrs_bridge.hub.load`): the state of program
    `name` by `author` for `program.load_state`. It lives in dsrs_bridge.programs; this module
    is the clients/budget hub, and only forwards."""
    from dsrs_bridge.programs import load as load_program

    return load_program(name, author=author, relays=relays, keys=keys, timeout=timeout)
