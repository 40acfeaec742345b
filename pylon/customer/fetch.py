"""Fetch a job's answer from the relays after the fact: `pylon result JOB_ID`, crash recovery.

An ask can end without its answer while the answer exists: the customer was killed after
paying, the relay was down when the result came, the ask timed out just before it. Results are
stored by relays (until they expire), so the job id is enough to get it back: one query for
kind-6050 results and kind-7000 feedback tagged `#e = job id` and `#p = us`.

`lookup_job` returns what the relays hold: the result (decrypted with our keys; when we paid a
provider, only that provider's result counts, as in an ask), else the last `error` and whether
it offers a refund. `recover_paid_jobs` runs when a paying client starts: for each paid receipt
with neither a result nor a refund (newest first, bounded) it looks the job up, records the
result's event id on the receipt, or asks for the refund the provider offered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pylon.customer.lease import owner_alive
from pylon.customer.ledger import Ledger, Receipt
from pylon.customer.refunds import request_refund
from pylon.jobs.keyed import SealError, delivery_hash, key_hash, open_sealed_result
from pylon.jobs.nip90 import KIND_FEEDBACK, KIND_RESULT, JobFeedback, JobParseError, JobResult
from pylon.jobs.refund import refund_offer
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from wallet.base import Wallet

log = logging.getLogger("pylon.customer.fetch")

RECOVER_WINDOW_S = 24 * 3600  # receipts older than this are not chased at start-up
RECOVER_MAX = 50


@dataclass(slots=True)
class JobLookup:
    """What the relays hold for one job."""

    job_id: str
    result: JobResult | None = None
    error: str | None = None           # the last `error` feedback's reason, if no result
    error_provider: str | None = None
    refund_offer_msat: int | None = None

    @property
    def found(self) -> bool:
        return self.result is not None


async def lookup_job(pool: Any, keys: Keys, job_id: str, *, provider: str | None = None,
                     timeout: float = 5.0, preimage: str | None = None) -> JobLookup:
    """The job's result (from `provider` when given), else its last error, from the relays.

    A sealed result (pay for the key, pylon.jobs.keyed) is opened with `preimage`, the paid
    receipt's: how a customer killed between paying and opening gets its answer back."""
    flt = Filter.of(kinds=[KIND_RESULT, KIND_FEEDBACK], e=[job_id], p=[keys.public_key])
    events = await pool.query([flt], timeout=timeout)
    out = JobLookup(job_id)
    for event in sorted(events, key=lambda e: e.created_at):
        if provider is not None and event.pubkey != provider:
            continue
        try:
            if event.kind == KIND_RESULT:
                if delivery_hash(event) is not None:
                    if preimage is None or key_hash(preimage) != delivery_hash(event):
                        continue  # sealed, and not with the key we paid for
                    try:
                        result = open_sealed_result(event, preimage, keys)
                    except SealError as exc:
                        log.warning("sealed result %s for job %s does not open: %s", event.id[:12], job_id[:12], exc)
                        continue
                else:
                    result = JobResult.from_event(event, keys)
                if result.request_id == job_id and out.result is None:
                    out.result = result
            else:
                fb = JobFeedback.from_event(event, keys)
                if fb.request_id == job_id and fb.status == "error":
                    out.error, out.error_provider = fb.extra or fb.content or "unspecified error", fb.provider
                    out.refund_offer_msat = refund_offer(event)
        except JobParseError as exc:
            log.info("unusable reply %s for job %s: %s", event.id[:12], job_id[:12], exc)
    return out


async def recover_paid_jobs(ledger: Ledger, wallet: Wallet, keys: Keys, pool: Any, *,
                            now: float | None = None) -> list[tuple[Receipt, JobLookup]]:
    """For paid receipts without a result or refund: fetch the result, or claim an offered refund."""
    since = (time.time() if now is None else now) - RECOVER_WINDOW_S
    mine = ledger._lease.owner if ledger._lease is not None else None
    # only receipts whose process is gone: a live process sharing PYLON_HOME is still waiting for its own
    todo = [r for r in ledger.paid_without_result(since=since)
            if not owner_alive(ledger.path, r.owner, mine=mine) or r.owner == mine][-RECOVER_MAX:]
    out: list[tuple[Receipt, JobLookup]] = []
    for receipt in todo:
        try:
            found = await lookup_job(pool, keys, receipt.job_id, provider=receipt.provider, timeout=3.0,
                                     preimage=receipt.preimage)
        except Exception as exc:  # relays unreachable: the next start tries again
            log.info("cannot look up job %s: %s", receipt.job_id[:12], type(exc).__name__)
            continue
        if found.result is not None and found.result.event is not None:
            receipt = await ledger.mark_result_async(receipt.job_id, found.result.event.id) or receipt
            log.info("paid job %s: result fetched from the relays (`pylon result %s`)", receipt.job_id[:12],
                     receipt.job_id)
        elif found.refund_offer_msat and wallet is not None:
            try:
                receipt = await request_refund(ledger, wallet, keys, pool, receipt, wait_s=5.0)
            except Exception as exc:
                log.warning("refund for job %s not obtained: %s", receipt.job_id[:12], type(exc).__name__)
        out.append((receipt, found))
    return out
