"""Old requests someone already answered are not run again.

A provider looks back `LOOKBACK_S` before its start (pylon.provider.provider), so jobs
published while it was down are not missed. The same window also holds jobs that another
provider answered long ago: a fresh provider (new store) would run each of them again and
publish results nobody reads, or send invoices to customers who left.

Requests carry no NIP-40 expiration to tell the two apart: a customer whose clock runs
behind would stamp an expiration that is already past on the provider's (and the relays')
clock, and the job would be dropped. So a request older than `OLD_AFTER_S` on arrival is
checked against the relays instead: one REQ for results (`kind + 1000`, `#e` = its id)
batched over the requests that arrived within `BATCH_WINDOW_S`. A request with any result is
skipped; one without is served as usual. A fresh request costs nothing. When the relays
cannot answer the query, the request is served (running a job twice costs the provider;
missing one costs the customer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, Sequence

from pylon.nostr.event import Event
from pylon.nostr.filters import Filter

log = logging.getLogger("pylon.provider")

#: a request this much older than the provider's clock on arrival is checked for an answer
OLD_AFTER_S = 30
BATCH_WINDOW_S = 0.05
MAX_BATCH = 200
QUERY_TIMEOUT_S = 5.0


class Queries(Protocol):
    async def query(self, filters: Sequence[Filter], *, timeout: float = 5.0) -> list[Event]: ...


class AnsweredCheck:
    """Batches "has this request a result yet?" into one relay query per burst."""

    def __init__(self, pool: Queries, *, window_s: float = BATCH_WINDOW_S,
                 timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self._pool = pool
        self._window_s = window_s
        self._timeout_s = timeout_s
        self._pending: dict[str, tuple[int, asyncio.Future[bool]]] = {}
        self._flusher: asyncio.Task | None = None

    async def answered(self, request: Event) -> bool:
        """True when a relay holds a result for `request` (from any provider)."""
        waiting = self._pending.get(request.id)
        if waiting is not None:
            return await asyncio.shield(waiting[1])
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (request.kind + 1000, future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="provider:answered-check")
        return await asyncio.shield(future)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._window_s)
        while self._pending:
            batch = dict(list(self._pending.items())[:MAX_BATCH])
            for request_id in batch:
                del self._pending[request_id]
            answered = await self._query(batch)
            for request_id, (_, future) in batch.items():
                if not future.done():
                    future.set_result(request_id in answered)

    async def _query(self, batch: dict[str, tuple[int, asyncio.Future[bool]]]) -> set[str]:
        ids = list(batch)
        kinds = sorted({kind for kind, _ in batch.values()})
        try:
            results = await self._pool.query([Filter.of(kinds=kinds, e=ids)], timeout=self._timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # served as usual: see the module docstring
            log.info("could not check %d old request(s) for results (%s); serving them", len(ids),
                     str(exc) or type(exc).__name__)
            return set()
        wanted = set(ids)
        return {t[1] for e in results for t in e.tags if len(t) >= 2 and t[0] == "e" and t[1] in wanted}

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for _, future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
