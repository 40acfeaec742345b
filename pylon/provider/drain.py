"""Stopping and pausing a provider without dropping paid work (issue 18).

Closing (`close_intake`) is what a drain and a pause share: the provider takes no new request
(a request addressed to it gets `error` feedback saying so, so its customer can go elsewhere at
once; an untargeted one is left to other providers and not recorded, so a restart's look-back
still finds it) and its NIP-89 announcement is withdrawn (a NIP-09 deletion of its address;
it would expire by itself through NIP-40 anyway). Nothing already taken is touched.

`drain` then waits until every job that must finish has finished, or `timeout_s` has passed, or
`force` is set (a second SIGTERM/SIGINT): a job must finish when it is paid or running (or, on
a free provider, accepted). A job still waiting for its invoice to be paid is not waited for: it
stays `awaiting_payment` in the job store and the next start resumes it (a payment that arrives
meanwhile is seen then). Whatever is left when the wait ends is cancelled by
`Provider.running()`'s exit and stays in the store for the next start, as before.

The provider itself needs only a flag (`Provider.accepting`) and two checks; the logic is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pylon.jobs.nip90 import JobRequest

if TYPE_CHECKING:
    from pylon.nostr.event import Event
    from pylon.provider.provider import Provider

log = logging.getLogger("pylon.provider")

#: states a drain waits for (a job waiting for its payment is not among them)
MUST_FINISH = frozenset({"seen", "quoted", "paid", "processing"})
POLL_S = 0.1
CLOSED_REASON = "this provider is shutting down and takes no new jobs; nothing was charged, try another provider"
PAUSED_REASON = "this provider is paused for maintenance and takes no new jobs; nothing was charged, try later"


@dataclass(slots=True)
class DrainResult:
    """How a drain ended: jobs it waited for, those finished, those left for the next start."""

    waited_for: int
    left: int
    seconds: float
    forced: bool


async def close_intake(provider: "Provider", reason: str) -> None:
    """Take no new jobs and withdraw the announcement (idempotent)."""
    provider.accepting = False
    provider.closed_reason = reason
    if provider.pool is not None:
        await provider.withdraw(reason)


async def open_intake(provider: "Provider") -> None:
    """Take jobs again and announce at once (after a pause)."""
    provider.accepting = True
    if provider.pool is not None:
        await provider.announce()
    log.info("taking jobs again (resumed)")


def refuse_closed(provider: "Provider", event: "Event", targeted: bool) -> None:
    """A request arrived while intake is closed: tell its customer if it was addressed to us."""
    provider.stats.ignored += 1
    if not targeted or provider.store is None:
        return
    if not provider.store.record_seen(event.id, event.pubkey, event.created_at, event.to_json()):
        return  # already known (taken before the drain, or refused once)
    reason = getattr(provider, "closed_reason", None) or CLOSED_REASON
    provider.store.transition(event.id, "error", error=reason)
    stub = JobRequest(messages=[], id=event.id, customer=event.pubkey)
    provider._feedback_soon(stub, "error", extra=reason)


def must_finish(provider: "Provider") -> list[str]:
    """Ids of the provider's live jobs a drain waits for."""
    store = provider.store
    if store is None:
        return []
    return [jid for jid in list(provider._jobs) if store.status(jid) in MUST_FINISH]


async def drain(provider: "Provider", *, timeout_s: float, force: asyncio.Event | None = None) -> DrainResult:
    """Close intake, then wait (at most `timeout_s`, or until `force`) for paid and running jobs."""
    started = time.monotonic()
    await close_intake(provider, CLOSED_REASON)
    waiting = must_finish(provider)
    log.info("draining: %d job(s) to finish, up to %.0f s (a second signal stops at once)", len(waiting), timeout_s)
    deadline = started + max(0.0, timeout_s)
    forced = False
    left = waiting
    while left:
        now = time.monotonic()
        if now >= deadline:
            break
        if force is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(force.wait(), min(POLL_S, deadline - now))
            if force.is_set():
                forced = True
                break
        else:
            await asyncio.sleep(min(POLL_S, deadline - now))
        left = must_finish(provider)
    result = DrainResult(waited_for=len(waiting), left=len(left), seconds=time.monotonic() - started, forced=forced)
    if left:
        log.warning("drain ended with %d job(s) unfinished (%s); they resume on the next start", len(left),
                    "second signal" if forced else f"drain timeout {timeout_s:.0f} s")
    else:
        log.info("drained: %d job(s) finished in %.1f s", len(waiting), result.seconds)
    return result


def shutdown_signals() -> tuple[asyncio.Event, asyncio.Event]:
    """(stop, force): the first SIGTERM/SIGINT sets `stop` (drain), the next one sets `force`
    (exit at once). Call inside the running loop."""
    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            force.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    return stop, force
