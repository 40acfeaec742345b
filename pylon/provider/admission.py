"""Fair admission: who gets a place in the provider's queue and a backend slot.

Without it, 2,000 requests from fresh keys filled the 1,024-job queue and every other
customer was told "busy". The policy (also in docs/HARDENING.md):

* Queue: at most `max_pending` jobs in all. One customer (pubkey) holds at most
  `per_customer_pending` of them (default: max(4, max_pending // 32, 2 x concurrency)).
* Fresh keys: customers this provider has never served (no `done` job in its store)
  together hold at most `fresh_share` of the queue (default half). A swarm of new keys
  fills its half; the other half stays open to returning customers. (A key is free to
  make, so nothing tells one honest newcomer from a swarm: newcomers share one pool.)
* Backend slots: `concurrency` in all. When jobs wait, a freed slot goes to the waiting
  customer who has the fewest jobs running (ties: who waited longest): under contention
  every customer converges to an equal share of the slots, whatever the number of jobs it
  queued; alone, a customer may use every slot.

Refusals are `error` feedback whose text says which bound was hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import OrderedDict
from typing import AsyncIterator

RETURNING_MEMORY = 100_000  # returning customers remembered (LRU)


class Admission:
    def __init__(self, max_pending: int, concurrency: int, *, per_customer_pending: int | None = None,
                 fresh_share: float = 0.5) -> None:
        self.max_pending = max_pending
        self.concurrency = concurrency
        # at least twice `concurrency`: a customer alone may fill every backend slot and keep the
        # next jobs queued (a gateway is one key; a client's next job can arrive before the
        # provider has counted the previous one as finished)
        self.per_customer_pending = per_customer_pending or max(4, max_pending // 32, 2 * concurrency)
        self.fresh_limit = max(1, int(max_pending * fresh_share))
        self.pending: dict[str, int] = {}  # customer -> jobs admitted and not finished
        self._total = 0  # sum of `pending` (checked on every request: not summed each time)
        self.fresh_pending = 0
        self._fresh_of: dict[str, bool] = {}  # customer -> counted as fresh while pending
        self.returning: OrderedDict[str, None] = OrderedDict()
        self.running: dict[str, int] = {}
        self.free_slots = concurrency
        self._waiters: dict[str, list[tuple[int, asyncio.Future]]] = {}
        self._order = itertools.count()

    # ------------------------------------------------------------------ the queue
    def served(self, customer: str) -> None:
        """`customer` got a result: from now on a returning customer."""
        self.returning[customer] = None
        self.returning.move_to_end(customer)
        while len(self.returning) > RETURNING_MEMORY:
            self.returning.popitem(last=False)

    def total_pending(self) -> int:
        return self._total

    def refuse(self, customer: str) -> str | None:
        """Why `customer`'s new job may not be queued now (None: admit it)."""
        total = self.total_pending()
        if total >= self.max_pending:
            return f"provider busy ({total} jobs pending); try again later or another provider"
        mine = self.pending.get(customer, 0)
        if mine >= self.per_customer_pending:
            return f"too many jobs from you at once ({mine} pending, at most {self.per_customer_pending}); wait for them"
        if customer not in self.returning and mine == 0 and self.fresh_pending >= self.fresh_limit:
            return ("provider busy with new customers (their share of the queue is full); "
                    "try again later or another provider")
        return None

    def admit(self, customer: str) -> None:
        mine = self.pending.get(customer, 0)
        if mine == 0:
            fresh = customer not in self.returning
            self._fresh_of[customer] = fresh
            self.fresh_pending += fresh
        self.pending[customer] = mine + 1
        self._total += 1

    def release(self, customer: str) -> None:
        if customer not in self.pending:
            return
        self._total -= 1
        mine = self.pending[customer] - 1
        if mine > 0:
            self.pending[customer] = mine
            return
        self.pending.pop(customer, None)
        if self._fresh_of.pop(customer, False):
            self.fresh_pending -= 1

    # ------------------------------------------------------------------ backend slots
    @contextlib.asynccontextmanager
    async def slot(self, customer: str) -> AsyncIterator[None]:
        """One backend slot for `customer`, handed out fairly (see the module docstring)."""
        if self.free_slots > 0 and not self._waiters:
            self._take(customer)
        else:
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(customer, []).append((next(self._order), future))
            try:
                await future  # _hand_out took the slot for us
            except BaseException:
                if future.done() and not future.cancelled():
                    self._give_back(customer)  # granted as we were cancelled: pass it on
                else:
                    self._drop_waiter(customer, future)
                raise
        try:
            yield
        finally:
            self._give_back(customer)

    def _take(self, customer: str) -> None:
        self.free_slots -= 1
        self.running[customer] = self.running.get(customer, 0) + 1

    def _give_back(self, customer: str) -> None:
        self.free_slots += 1
        left = self.running.get(customer, 0) - 1
        if left > 0:
            self.running[customer] = left
        else:
            self.running.pop(customer, None)
        self._hand_out()

    def _drop_waiter(self, customer: str, future: asyncio.Future) -> None:
        queue = self._waiters.get(customer)
        if queue is None:
            return
        queue[:] = [w for w in queue if w[1] is not future]
        if not queue:
            del self._waiters[customer]

    def _hand_out(self) -> None:
        while self.free_slots > 0 and self._waiters:
            # the waiting customer with the fewest jobs running; ties: the oldest waiter
            customer = min(self._waiters, key=lambda c: (self.running.get(c, 0), self._waiters[c][0][0]))
            _, future = self._waiters[customer].pop(0)
            if not self._waiters[customer]:
                del self._waiters[customer]
            if future.cancelled():
                continue
            self._take(customer)
            future.set_result(None)
