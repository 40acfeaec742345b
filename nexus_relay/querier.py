"""REQ and COUNT queries on their own thread, shared fairly between connections, each in a budget.

Why: on the event loop a query blocks every client for as long as SQLite runs it (a 22 KB
REQ of 200 filters stalled the relay for 7.7 s). Here:

- one worker thread with its own read connection (WAL: reads never wait for the writer,
  and sqlite3 releases the GIL while it steps, so the loop keeps running);
- connections take turns, one query per turn (round robin), so a connection with a queue
  of expensive queries delays another connection's query by at most one query;
- each query has a wall-time budget, enforced by SQLite's progress handler (the statement
  is interrupted), and a row and byte budget (`store.run_query`);
- a connection whose output is backed up (`Connection.output_full`) is skipped until it
  drains, so stored events are never produced faster than the client reads them.

Results go back to the loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from pylon.nostr import Filter

from nexus_relay.config import RelayConfig
from nexus_relay.ratelog import RateLimitedLog
from nexus_relay.store import EventStore, run_count, run_query

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)


@dataclass(slots=True)
class QueryResult:
    rows: list[tuple[str, str]] = field(default_factory=list)  # REQ: (id, raw), newest first
    count: int = 0  # COUNT
    error: str = ""  # a reply-ready reason ("error: ...") when the query did not finish
    seconds: float = 0.0  # wall time spent, charged to the connection's query budget


@dataclass(slots=True)
class QueryJob:
    owner: Any  # the Connection (must have `output_full`)
    counting: bool
    filters: list[Filter]
    now: int
    done: Callable[[QueryResult], None]


class Querier:
    """Runs QueryJobs on one thread; `submit` and `forget` are called from the loop."""

    def __init__(self, store: EventStore, config: RelayConfig) -> None:
        self.store = store
        self.config = config
        self._cv = threading.Condition()
        self._queues: dict[Any, deque[QueryJob]] = {}
        self._ready: deque[Any] = deque()  # owners with queued work, in turn order
        self._parked: set[Any] = set()  # owners skipped while their output is backed up
        self._stop = False
        self._deadline = 0.0
        self._db: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.queries = 0
        self.timeouts = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._db = self.store.connect_reader()
        self._db.set_progress_handler(self._progress, 1000)
        self._stop = False
        self._thread = threading.Thread(target=self._main, name="nexus-querier", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ loop side
    def submit(self, job: QueryJob) -> None:
        """Queue a job. The caller bounds how many a connection may have waiting (the relay
        refuses a REQ/COUNT past `max_pending_queries` before it gets here)."""
        with self._cv:
            queue = self._queues.get(job.owner)
            if queue is None:
                queue = self._queues[job.owner] = deque()
                if job.owner not in self._parked:
                    self._ready.append(job.owner)
            queue.append(job)
            self._cv.notify()

    def resume(self, owner: Any) -> None:
        """The owner's output drained: give it turns again."""
        with self._cv:
            if owner in self._parked:
                self._parked.discard(owner)
                if owner in self._queues:
                    self._ready.append(owner)
                    self._cv.notify()

    def forget(self, owner: Any) -> None:
        """The connection closed: drop what it still had queued."""
        with self._cv:
            self._queues.pop(owner, None)
            self._parked.discard(owner)

    # ------------------------------------------------------------------ worker
    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def _next(self) -> QueryJob | None:
        with self._cv:
            while True:
                if self._stop:
                    return None
                if not self._ready:
                    self._cv.wait()
                    continue
                owner = self._ready.popleft()
                queue = self._queues.get(owner)
                if not queue:
                    self._queues.pop(owner, None)
                    continue
                if owner.output_full:
                    self._parked.add(owner)
                    continue
                job = queue.popleft()
                if queue:
                    self._ready.append(owner)
                else:
                    del self._queues[owner]
                return job

    def _main(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            result = self._run(job)
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(job.done, result)
            except RuntimeError:  # loop closed meanwhile
                return

    def _run(self, job: QueryJob) -> QueryResult:
        cfg = self.config
        db = self._db
        assert db is not None
        start = time.monotonic()
        self._deadline = start + cfg.query_max_seconds
        result = QueryResult()
        self.queries += 1
        try:
            if job.counting:
                result.count = run_count(db, job.filters, job.now)
            else:
                result.rows = run_query(db, job.filters, job.now, cfg.max_limit, cfg.query_max_rows,
                                        cfg.query_max_bytes)
        except sqlite3.OperationalError as exc:
            if "interrupt" in str(exc):
                self.timeouts += 1
                result.error = f"error: query took longer than its {cfg.query_max_seconds:g} s budget; narrow the filters"
            else:
                _rlog.warn("query", "nexus querier: query failed: %s", exc)
                result.error = "error: query failed"
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            _rlog.warn("query", "nexus querier: query failed: %s", exc)
            result.error = "error: query failed"
        result.seconds = time.monotonic() - start
        return result
