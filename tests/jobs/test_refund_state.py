"""The provider job store's refund state: owed only for a paid job, claimed for paying once."""

from __future__ import annotations

import time

from pylon.provider.jobstore import JobStore


def _paid_failed(store: JobStore, rid: str, customer: str = "c" * 64) -> None:
    store.record_seen(rid, customer, int(time.time()), "{}")
    assert store.transition(rid, "quoted", amount_msat=2_000)
    assert store.transition(rid, "awaiting_payment", payment_hash="ab" * 32)
    assert store.transition(rid, "paid", paid_at=time.time())
    assert store.transition(rid, "error", error="backend down past the deadline")


def test_refund_is_offered_only_for_paid_jobs_and_claimed_once(tmp_path):
    with JobStore(tmp_path / "p.sqlite") as store:
        store.record_seen("unpaid", "c" * 64, int(time.time()), "{}")
        store.transition("unpaid", "error", error="x")
        assert not store.offer_refund("unpaid", 2_000)  # nothing was paid: nothing is owed
        _paid_failed(store, "j1")
        assert store.offer_refund("j1", 2_000) and not store.offer_refund("j1", 2_000)
        assert not store.claim_refund("j1", "d" * 64, "11" * 32)  # not the job's customer
        assert store.claim_refund("j1", "c" * 64, "11" * 32)
        assert not store.claim_refund("j1", "c" * 64, "22" * 32)  # a second request pays nothing
        store.finish_refund("j1", paid=False)                      # the wallet refused: offer reopens
        assert store.claim_refund("j1", "c" * 64, "33" * 32)
        store.finish_refund("j1", paid=True)
        row = store.get("j1")
        assert (row.refund_status, row.refund_msat, row.refund_hash) == ("refunded", 2_000, "33" * 32)
        assert row.refunded_at is not None and not store.claim_refund("j1", "c" * 64, "44" * 32)
    with JobStore(tmp_path / "p.sqlite") as store:  # survives a restart
        assert store.get("j1").refund_status == "refunded" and store.refunds_in("paying") == []
