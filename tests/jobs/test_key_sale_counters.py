"""Lifetime counters of a job paid for the key (pylon.provider.counters), on a real job store:
the same whichever comes first, the key bought or the job marked published. The relay fans a
result out before it answers OK, so a quick customer can pay before the provider marks the job
`done` (seen in a CI run: the sale was then not counted)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from pylon.provider.counters import read as read_counters
from pylon.provider.jobstore import JobStore

PRICE = 2_000


def _key_job_ready(store: JobStore, rid: str) -> None:
    """A job paid for the key, run and its sealed result kept with its invoice, not yet published."""
    assert store.record_seen(rid, "cust", int(time.time()), "{}", model="m")
    assert store.claim_processing(rid, amount_msat=PRICE, model="m")
    store.mark_result_ready(rid, '{"id":"r"}', key_invoice=("lnbcrt1x", "ab" * 32, int(time.time()) + 600))


def _money(store: JobStore) -> dict[str, int]:
    return {name: value for (name, label), value in read_counters(store._db).items()
            if name in ("paid", "paid_msat", "earned_msat")}


@pytest.mark.parametrize("key_bought_first", [False, True])
def test_a_key_sale_counts_once_whichever_comes_first(tmp_path, key_bought_first):
    with JobStore(tmp_path / "p.sqlite") as store:
        _key_job_ready(store, "job")
        if key_bought_first:
            assert store.mark_key_paid("job")
        store.mark_result_published("job", "r", prompt_tokens=1, completion_tokens=1, amount_msat=PRICE)
        if not key_bought_first:
            assert store.mark_key_paid("job")
        assert not store.mark_key_paid("job")  # once
        assert _money(store) == {"paid": 1, "paid_msat": PRICE, "earned_msat": PRICE}


def test_a_key_bought_for_a_job_never_published_is_paid_not_earned(tmp_path):
    with JobStore(tmp_path / "p.sqlite") as store:
        _key_job_ready(store, "job")
        assert store.mark_key_paid("job")
        assert _money(store) == {"paid": 1, "paid_msat": PRICE}


def test_an_older_stores_key_trigger_is_replaced(tmp_path):
    path = tmp_path / "p.sqlite"
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER job_counters_key_sold")
    db.execute("CREATE TRIGGER job_counters_key_paid AFTER UPDATE OF paid_at ON jobs BEGIN SELECT 1; END")
    db.commit()
    db.close()
    with JobStore(path) as store:
        triggers = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "job_counters_key_sold" in triggers and "job_counters_key_paid" not in triggers
