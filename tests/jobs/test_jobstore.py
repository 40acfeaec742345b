"""The provider's SQLite job store: record-before-act, no double runs, restart recovery."""

from __future__ import annotations

import sqlite3

import pytest

from pylon.provider.jobstore import MAX_ATTEMPTS, JobStore


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "provider.sqlite")
    yield s
    s.close()


def _seen(store, rid="a" * 64, created_at=100):
    return store.record_seen(rid, "c" * 64, created_at, '{"id":"%s"}' % rid, model="m")


def test_defaults_to_pylon_home(pylon_home):
    with JobStore() as s:
        assert s.path == pylon_home / "provider.sqlite"
    mode = sqlite3.connect(pylon_home / "provider.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_seen_is_insert_or_ignore_and_tracks_last_created_at(store):
    assert _seen(store, "a" * 64, 100) is True
    assert _seen(store, "a" * 64, 100) is False
    assert _seen(store, "b" * 64, 90) is True
    assert store.last_request_created_at() == 100
    assert store.status("a" * 64) == "seen"
    assert store.get("a" * 64).model == "m"


def test_happy_path_free_job(store):
    rid = "a" * 64
    _seen(store, rid)
    assert store.transition(rid, "quoted", amount_msat=0)
    assert store.claim_processing(rid)
    assert not store.claim_processing(rid)  # a second runner loses
    store.mark_result_published(rid, "e" * 64, prompt_tokens=3, completion_tokens=4)
    row = store.get(rid)
    assert (row.status, row.result_published, row.result_event_id, row.prompt_tokens, row.attempts) == (
        "done", True, "e" * 64, 3, 1)


def test_paid_path_has_columns_for_the_payment_step(store):
    rid = "a" * 64
    _seen(store, rid)
    assert store.transition(rid, "quoted", amount_msat=5000)
    assert not store.claim_processing(rid + "x")
    assert store.transition(rid, "awaiting_payment", invoice="lnbcrt1", payment_hash="h" * 64, invoice_expires_at=99)
    assert not store.claim_processing(rid)  # unpaid: cannot run
    assert store.transition(rid, "paid", paid_at=1.0)
    assert store.by_payment_hash("h" * 64).status == "paid"
    assert store.claim_processing(rid)


@pytest.mark.parametrize("to, start", [("paid", "seen"), ("done", "seen"), ("awaiting_payment", "seen"),
                                       ("quoted", "done"), ("seen", "seen")])
def test_illegal_transitions_are_refused(store, to, start):
    rid = "a" * 64
    _seen(store, rid)
    if start == "done":
        store.claim_processing(rid)
        store.mark_result_published(rid, "e" * 64, prompt_tokens=1, completion_tokens=1)
    assert store.transition(rid, to) is False
    assert store.status(rid) == start


def test_bad_arguments(store):
    with pytest.raises(ValueError):
        store.transition("a" * 64, "flying")
    with pytest.raises(ValueError):
        store.transition("a" * 64, "processing")
    with pytest.raises(ValueError):
        store.transition("a" * 64, "done", status="x")


def test_cancel_and_error_from_live_states_only(store):
    rid = "a" * 64
    _seen(store, rid)
    assert store.claim_processing(rid)
    assert store.transition(rid, "cancelled")
    assert not store.transition(rid, "error", error="late")
    assert store.status(rid) == "cancelled"


def test_recovery_reruns_once_and_respects_published_results(tmp_path):
    path = tmp_path / "p.sqlite"
    s = JobStore(path)
    ids = {name: name[0] * 64 for name in ("running", "published", "fresh", "awaiting", "twice")}
    for n, rid in enumerate(ids.values()):
        s.record_seen(rid, "c" * 64, 100 + n, "{}")
    s.claim_processing(ids["running"])
    s.claim_processing(ids["published"])
    s._db.execute("UPDATE jobs SET result_published = 1 WHERE request_id = ?", (ids["published"],))
    s.transition(ids["awaiting"], "quoted")
    s.transition(ids["awaiting"], "awaiting_payment")
    s.claim_processing(ids["twice"])
    s._db.execute("UPDATE jobs SET attempts = ? WHERE request_id = ?", (MAX_ATTEMPTS, ids["twice"]))
    s.close()  # the provider "dies"

    s = JobStore(path)
    todo = {r.request_id: r.status for r in s.recover()}
    assert todo == {ids["running"]: "processing", ids["fresh"]: "seen"}
    assert s.status(ids["published"]) == "done"
    assert s.status(ids["twice"]) == "error"
    assert s.status(ids["awaiting"]) == "awaiting_payment"
    assert s.claim_processing(ids["running"], rerun=True)   # the one re-run
    assert not s.claim_processing(ids["running"], rerun=True)
    assert s.get(ids["running"]).attempts == 2
    assert s.claim_processing(ids["fresh"])
    assert s.last_request_created_at() == 104
    s.close()


def test_meta_round_trip(store):
    store.set_meta("announced_at", 123)
    assert store.get_meta("announced_at") == 123
    assert store.get_meta("nothing") is None
    assert store.counts() == {}


def test_a_stored_but_unconfirmed_result_is_republished_not_rerun(tmp_path):
    path = tmp_path / "p.sqlite"
    s = JobStore(path)
    rid = "a" * 64
    s.record_seen(rid, "c" * 64, 1, "{}")
    s.claim_processing(rid)
    s._db.execute("UPDATE jobs SET attempts = ? WHERE request_id = ?", (MAX_ATTEMPTS, rid))
    s.mark_result_ready(rid, '{"id":"r"}')
    s.close()
    s = JobStore(path)
    rows = s.recover()
    assert [(r.request_id, r.status, r.result_json) for r in rows] == [(rid, "processing", '{"id":"r"}')]
    s.mark_result_published(rid, "r" * 64, prompt_tokens=None, completion_tokens=None)
    assert s.status(rid) == "done"
    s.close()
