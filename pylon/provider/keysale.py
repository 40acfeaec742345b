"""Selling the key of a sealed result (pay for the key, pylon.jobs.keyed) with whatever the
provider's wallet can do: the invoice whose payment reveals the key P, and collecting it.

Two kinds of wallet can sell a key:

- **chosen preimage** (`SupportsPreimageInvoice`, the dev wallet): the wallet issues an
  invoice for P itself and settles by itself when paid; the provider only watches it.
- **hold invoice** (`SupportsHoldInvoice` and `hold_invoices_offered()`: an NWC service that
  lists NIP-47 `make_hold_invoice`/`settle_hold_invoice`/`cancel_hold_invoice`, e.g. `pylon
  wallet serve-nwc`): the provider asks for an invoice for sha256(P), waits for the payment
  to be locked (`hold_invoice_accepted`, or lookup), then settles it with P; the payer's
  wallet gets P as the preimage exactly when the provider takes the money. An invoice that
  expires unpaid is cancelled.

P of a hold invoice is written to the job store (table `key_holds`, in the same SQLite file)
*before* the sealed result is published, so a provider restarted while a payment is locked
but not settled still settles it: never a sale lost, never money taken without the key
revealed (settling is what reveals it). Invoices stay open across a stop (a customer may pay
while the provider restarts; the next start settles); a payment locked while no provider
comes back is refunded by the payer's wallet at its settle deadline.

A wallet with neither (LNbits on a funding source without hold invoices, a bare wallet):
pay for the key is not announced and paid jobs use the pay-first flow
(pylon.provider.payments); `key_invoice_kind` logs which and why once at start.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Literal, cast

from pylon.jobs.keyed import key_hash
from pylon.provider.jobstore import JobStore
from wallet.base import Invoice, InvoiceState, SupportsHoldInvoice, SupportsPreimageInvoice, Wallet
from wallet.errors import AlreadyPaid, InvoiceNotFound, PaymentFailed
from wallet.waiting import EXPIRY_GRACE_S, WAIT_SLICE_S, wait_for_invoice

log = logging.getLogger("pylon.provider.keysale")

KeyInvoiceKind = Literal["preimage", "hold"]
SETTLE_RETRY_MAX_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS key_holds (
    request_id   TEXT PRIMARY KEY,
    payment_hash TEXT NOT NULL,
    preimage     TEXT,            -- P: kept until the hold is settled or cancelled
    state        TEXT NOT NULL,   -- 'open' | 'settled' | 'cancelled'
    updated_at   REAL NOT NULL
);
"""


async def key_invoice_kind(wallet: Wallet | None) -> KeyInvoiceKind | None:
    """How this wallet can sell a key: "preimage", "hold", or None (pay-first only; logged)."""
    if wallet is None:
        return None
    if isinstance(wallet, SupportsPreimageInvoice):
        return "preimage"
    if isinstance(wallet, SupportsHoldInvoice):
        try:
            if await wallet.hold_invoices_offered():
                return "hold"
        except Exception as exc:  # the wallet is unreachable now: paid jobs still work pay-first
            log.warning("could not ask %s whether it issues hold invoices (%s); pay for the key is off, "
                        "paid jobs are paid first", type(wallet).__name__, type(exc).__name__)
            return None
    log.info("%s issues neither invoices for a chosen preimage nor hold invoices: pay for the key is not "
             "offered; paid jobs are paid first", type(wallet).__name__)
    return None


class KeySales:
    """One provider's key invoices: make them, collect them, resume them after a restart."""

    def __init__(self, wallet: Wallet, kind: KeyInvoiceKind, store: JobStore) -> None:
        self.wallet = wallet
        self.kind = kind
        self.store = store
        self._db: sqlite3.Connection = store._db  # the job store's own connection: same file, same commits
        self._db.executescript(_SCHEMA)
        # the job store prunes finished jobs after a week; their key records go with them
        self._db.execute("DELETE FROM key_holds WHERE state != 'open' AND request_id NOT IN (SELECT request_id FROM jobs)")
        self._collecting: set[str] = set()

    async def invoice(self, request_id: str, amount_msat: int, key: str, memo: str, expiry_s: int) -> Invoice:
        """The invoice whose payment reveals `key` (for a hold invoice, P is recorded before it is
        returned). The caller keeps the invoice with the sealed result in one write
        (`JobStore.mark_result_ready`) before publishing it."""
        if self.kind == "hold":
            # kind "hold"/"preimage" was checked once (key_invoice_kind); an isinstance on a
            # protocol per job cost ~11 us
            payment_hash = key_hash(key)
            invoice = await cast(SupportsHoldInvoice, self.wallet).make_hold_invoice(amount_msat, payment_hash, memo, expiry_s)
            if invoice.payment_hash != payment_hash:
                raise PaymentFailed("the wallet's hold invoice is for another payment hash")
            self._db.execute("INSERT OR REPLACE INTO key_holds(request_id, payment_hash, preimage, state, updated_at)"
                             " VALUES (?, ?, ?, 'open', ?)", (request_id, invoice.payment_hash, key, time.time()))
        else:
            invoice = await cast(SupportsPreimageInvoice, self.wallet).make_invoice_with_preimage(amount_msat, key, memo, expiry_s)
        return invoice

    def open_holds(self) -> list[tuple[str, str, int]]:
        """(request id, payment hash, expiry) of hold invoices neither settled nor cancelled, expired
        or not: a payment locked before the expiry still waits to be settled."""
        owner = self.store.owner  # a worker of `pylon serve --workers` resumes its own jobs only
        rows = self._db.execute(
            "SELECT k.request_id, k.payment_hash, COALESCE(j.invoice_expires_at, 0) FROM key_holds k"
            " JOIN jobs j ON j.request_id = k.request_id WHERE k.state = 'open' AND j.paid_at IS NULL"
            + (" AND j.claimed_by = ?" if owner is not None else ""), (owner,) if owner is not None else ()).fetchall()
        return [(r[0], r[1], int(r[2])) for r in rows]

    def _hold(self, request_id: str) -> tuple[str, str] | None:
        row = self._db.execute("SELECT preimage, state FROM key_holds WHERE request_id = ?", (request_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def _close(self, request_id: str, state: str) -> None:
        keep = "preimage" if state == "settled" else "NULL"  # a cancelled key opens nothing anyone paid for
        self._db.execute(f"UPDATE key_holds SET state = ?, preimage = {keep}, updated_at = ? WHERE request_id = ?",
                         (state, time.time(), request_id))

    async def collect(self, request_id: str, payment_hash: str, expires_at: int) -> InvoiceState | None:
        """Wait for the key to be bought; SETTLED once the money is ours (recorded as paid_at),
        else the final state (None: no answer from the wallet in time). Once per job at a time."""
        if request_id in self._collecting:
            return None
        self._collecting.add(request_id)
        try:
            hold = self._hold(request_id)
            if hold is None:
                state = await wait_for_invoice(self.wallet, payment_hash, expires_at,
                                               label=f"job {request_id[:12]} (key)")
            elif hold[1] != "open" or hold[0] is None:
                return InvoiceState.SETTLED if hold[1] == "settled" else InvoiceState.FAILED
            else:
                state = await self._collect_hold(request_id, payment_hash, expires_at, hold[0])
            if state == InvoiceState.SETTLED:
                self.store.mark_key_paid(request_id)  # earnings and the paid/earned counters count it now
            return state
        finally:
            self._collecting.discard(request_id)

    async def _collect_hold(self, request_id: str, payment_hash: str, expires_at: int, key: str) -> InvoiceState | None:
        wallet = self.wallet
        assert isinstance(wallet, SupportsHoldInvoice)
        label = f"job {request_id[:12]} (key, hold invoice)"
        delay = 0.25
        while True:  # 1. until a payment is locked, or the invoice is over
            left = expires_at - time.time()
            state: InvoiceState | None
            try:
                state = await wallet.wait_hold_invoice(payment_hash, min(max(left, 0.0) + 0.05, WAIT_SLICE_S))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: the wallet did not answer (%s); asking again", label, type(exc).__name__)
                state = None
            if state == InvoiceState.ACCEPTED:
                break
            if state == InvoiceState.SETTLED:  # settled by an earlier run that stopped before recording it
                self._close(request_id, "settled")
                return state
            if state in (InvoiceState.EXPIRED, InvoiceState.FAILED) or (state == InvoiceState.PENDING and left <= 0):
                return await self._cancel(request_id, payment_hash, label,
                                          InvoiceState.FAILED if state == InvoiceState.FAILED else InvoiceState.EXPIRED)
            if state is None:
                if time.time() > expires_at + EXPIRY_GRACE_S:
                    return await self._cancel(request_id, payment_hash, label, None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_RETRY_MAX_S)
        delay = 0.25
        while True:  # 2. the money is locked: settle with P (this reveals the key to the payer)
            try:
                await wallet.settle_hold_invoice(key)
            except asyncio.CancelledError:
                raise
            except (PaymentFailed, InvoiceNotFound, AlreadyPaid) as exc:
                # refused: settled already, or the hold was cancelled (the payer's deadline passed)
                final = await self._lookup(payment_hash)
                if final == InvoiceState.SETTLED:
                    break
                if final in (InvoiceState.FAILED, InvoiceState.EXPIRED):
                    log.warning("%s: the locked payment could not be settled (%s); it went back to the payer",
                                label, exc)
                    self._close(request_id, "cancelled")
                    return final
                await asyncio.sleep(delay)
            except Exception as exc:  # unreachable, timeout: the money is locked for us, keep trying
                log.warning("%s: settling failed (%s); retrying", label, type(exc).__name__)
                await asyncio.sleep(delay)
            else:
                break
            delay = min(delay * 2, SETTLE_RETRY_MAX_S)
        self._close(request_id, "settled")
        log.debug("%s: settled, the key is revealed to the payer", label)
        return InvoiceState.SETTLED

    async def _lookup(self, payment_hash: str) -> InvoiceState | None:
        try:
            return await self.wallet.lookup_invoice(payment_hash)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None

    async def _cancel(self, request_id: str, payment_hash: str, label: str,
                      state: InvoiceState | None) -> InvoiceState | None:
        """The invoice is over unpaid: cancel it at the wallet (so nothing can lock it later);
        `state` is returned, or SETTLED when the wallet says it was settled after all."""
        assert isinstance(self.wallet, SupportsHoldInvoice)
        try:
            await self.wallet.cancel_hold_invoice(payment_hash)
        except asyncio.CancelledError:
            raise
        except AlreadyPaid:  # settled after all (by an earlier run): not ours to cancel
            self._close(request_id, "settled")
            return InvoiceState.SETTLED
        except Exception as exc:
            log.info("%s: cancelling the unpaid hold invoice failed (%s); it has expired anyway",
                     label, type(exc).__name__)
        self._close(request_id, "cancelled")
        log.info("%s: not paid before it expired; hold invoice cancelled", label)
        return state
