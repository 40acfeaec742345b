"""Who else is there: the live providers a failing job could go to (NIP-89 announcements).

Failover (pylon.customer.client) waits for others: after a provider's `error` an untargeted
job waits `error_grace_s` for another provider's answer, and a re-sent job waits a few
seconds for anyone to take it. That wait is right when other providers are about and pure
delay when the failed provider was the only one: an ask whose only provider says `error`
(a backend HTTP 400, a model it does not serve) used to be reported after ~8 s instead of at
once. So the client looks at the live announcements (kind 31990 for kind 5050, unexpired by
NIP-40, pylon.jobs.nip89) while the job runs, and skips the waits when no provider other than
the failed and avoided ones is live and serves the model.

"Evidently nobody else" is judged from announcements only: a DVM that never announces is not
counted (the job's own replies are: a provider that answered this job is somebody). When the
announcements cannot be read (relay slow or refusing the query), nothing is skipped. One query
per `ttl_s` per client, started in the background when a job starts, so it costs the ask
nothing unless the job fails before it is back (then at most `wait_s` more).

The same view ends an untargeted paid job's decision window early (pylon.customer.offers):
once every live provider serving the model has answered the job, nobody is left to wait for.
It also ends an untargeted ask whose only answers so far are refusals (a priced offer and no
wallet to pay it) or declines (an `error` from a provider that never started) as soon as no
other live provider is left that could still answer.

And it says when a targeted provider is known gone (`gone()`): the same query asks for the
NIP-09 deletions of announcements (kind 5, `k` 31990: how a Pylon provider withdraws), so a
provider whose newest announcement was deleted, or expired, is known not to take jobs; one
that never announced is unknown, not gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Callable, Final, Iterable

from pylon.jobs.nip89 import KIND_HANDLER, ProviderInfo, discovery_filter, newest_per_pubkey
from pylon.nostr import kinds
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter

if TYPE_CHECKING:
    from pylon.relay.pool import RelayPool

log = logging.getLogger("pylon.customer.live")

LIVE_TTL_S: Final = 30.0  # announcements are refreshed every 120 s and expire after 3 intervals
LIVE_QUERY_S: Final = 3.0  # the most one announcement query may take
LIVE_WAIT_S: Final = 1.0  # the most a failing job waits for a query still in flight
WITHDRAWALS_LIMIT: Final = 1000  # newest NIP-09 deletions of announcements read per query


def withdrawals_filter() -> Filter:
    """NIP-09 deletions of NIP-89 announcements (pylon.jobs.nip89.build_withdrawal)."""
    return Filter.of(kinds=[kinds.DELETION], k=[str(KIND_HANDLER)], limit=WITHDRAWALS_LIMIT)


def withdrawn_at(events: Iterable[Event]) -> dict[str, int]:
    """pubkey -> created_at of its newest deletion naming one of its own kind-31990 addresses."""
    out: dict[str, int] = {}
    for ev in events:
        if ev.kind != kinds.DELETION:
            continue
        for tag in ev.tags:
            if len(tag) >= 2 and tag[0] == "a":
                parts = tag[1].split(":", 2)
                if len(parts) == 3 and parts[0] == str(KIND_HANDLER) and parts[1] == ev.pubkey:
                    out[ev.pubkey] = max(out.get(ev.pubkey, 0), ev.created_at)
    return out


class LiveProviders:
    """A cached view of the live kind-5050 providers on the client's relays."""

    def __init__(self, pool: "RelayPool", *, ttl_s: float = LIVE_TTL_S, query_s: float = LIVE_QUERY_S) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self.query_s = query_s
        self._task: asyncio.Task[list[ProviderInfo] | None] | None = None
        self._at = 0.0
        self._gone: dict[str, str] = {}  # pubkey -> why it is known not to take jobs (last query)

    def refresh(self, max_age_s: float | None = None) -> None:
        """Start a query unless one younger than `max_age_s` (default: the TTL) is done, or one
        is in flight (never blocks)."""
        task = self._task
        fresh = self.ttl_s if max_age_s is None else max_age_s
        if task is not None and (not task.done() or time.monotonic() - self._at < fresh):
            return
        self._at = time.monotonic()
        self._task = asyncio.create_task(self._query(), name="pylon-client:live-providers")

    async def _query(self) -> list[ProviderInfo] | None:
        try:
            sub = self.pool.subscribe([discovery_filter(), withdrawals_filter()])
            async with sub:
                await sub.wait_eose(self.query_s)  # no EOSE in time: unknown (a partial list is no evidence)
                events = sub.drain()
        except Exception as exc:  # unknown, not "nobody": the waits stay
            log.info("live providers unknown: %s: %s", type(exc).__name__, exc)
            return None
        found = newest_per_pubkey(e for e in events if e.kind == KIND_HANDLER)
        withdrawn = withdrawn_at(events)
        now = time.time()
        gone: dict[str, str] = {}
        newest = {p.pubkey: p for p in found}
        for pubkey, at in withdrawn.items():
            info = newest.get(pubkey)
            if info is None or info.last_seen <= at:
                gone[pubkey] = "withdrew its announcement (NIP-09 deletion)"
        for p in found:
            if p.pubkey not in gone and not p.live(now):
                gone[p.pubkey] = "let its announcement expire"
        self._gone = gone
        return [p for p in found if p.live(now) and p.pubkey not in gone]

    async def get(self, wait_s: float = LIVE_WAIT_S) -> list[ProviderInfo] | None:
        """The live providers, or None when unknown (no query yet, or not back within `wait_s`)."""
        task = self._task
        if task is None:
            return None
        if not task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait_s)
            if not task.done():
                return None
        return task.result()

    def known(self, model: str | None) -> list[ProviderInfo] | None:
        """The live providers serving `model` as of the last finished query, without waiting
        (None: none finished yet, or it failed). What the decision window reads on every quote."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        live = task.result()
        return None if live is None else [p for p in live if p.serves(model)]

    def age(self) -> float:
        """Seconds since the last query started."""
        return time.monotonic() - self._at

    def gone(self, pubkey: str) -> str | None:
        """Why `pubkey` is known not to take jobs as of the last finished query (it withdrew or
        let expire its announcement), else None: live, never announced, or not known yet."""
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.result() is None:
            return None
        return self._gone.get(pubkey)

    def when_known(self, callback: Callable[[], None]) -> None:
        """Call `callback` (soon, on the loop) once the query in flight, or the last one, is done."""
        task = self._task
        if task is None:
            return
        if task.done():
            asyncio.get_running_loop().call_soon(callback)
        else:
            task.add_done_callback(lambda _t: callback())

    async def others(self, model: str | None, excluded: Iterable[str], *,
                     wait_s: float = LIVE_WAIT_S) -> list[ProviderInfo] | None:
        """Live providers serving `model` other than `excluded` (None: unknown)."""
        live = await self.get(wait_s)
        if live is None:
            return None
        skip = set(excluded)
        return [p for p in live if p.pubkey not in skip and p.serves(model)]

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
