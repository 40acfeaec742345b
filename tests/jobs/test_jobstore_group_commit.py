"""The job store's group commit (pylon.provider.jobstore, "Group commit"): a loop turn's per-job
writes commit together at the end of the turn, before any publish, and every other write at once."""

from __future__ import annotations

import asyncio
import sqlite3

from pylon.provider.jobstore import JobStore
from tests.e2e.helpers import customer, serving


def _others_see(path, rid: str) -> str | None:
    """What another process reading the file sees of a job (committed rows only)."""
    db = sqlite3.connect(str(path))
    try:
        row = db.execute("SELECT status FROM jobs WHERE request_id = ?", (rid,)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def _seen(store: JobStore, rid: str) -> bool:
    return store.record_seen(rid, "c" * 64, 100, '{"id":"%s"}' % rid, model="m")


async def test_a_turns_writes_commit_together_at_its_end(tmp_path):
    path = tmp_path / "p.sqlite"
    with JobStore(path) as store:
        a, b = "a" * 64, "b" * 64
        assert _seen(store, a) and _seen(store, b) and store.claim_processing(a, amount_msat=0)
        assert store.status(a) == "processing"  # this connection sees its own writes at once
        assert _others_see(path, a) is None and _others_see(path, b) is None  # not committed yet
        await asyncio.sleep(0)  # the turn ends: one commit
        assert _others_see(path, a) == "processing" and _others_see(path, b) == "seen"


async def test_flush_and_any_other_write_commit_at_once(tmp_path):
    path = tmp_path / "p.sqlite"
    with JobStore(path) as store:
        a, b = "a" * 64, "b" * 64
        _seen(store, a)
        store.flush()  # what the relay pool calls before every publish
        assert _others_see(path, a) == "seen"
        _seen(store, b)
        assert store.transition(b, "cancelled")  # not a per-job write: committed before it returns
        assert _others_see(path, b) == "cancelled"


async def test_a_store_shared_by_workers_commits_every_write(tmp_path):
    path = tmp_path / "p.sqlite"
    with JobStore(path, owner="w1-123") as store:
        _seen(store, "a" * 64)
        assert _others_see(path, "a" * 64) == "seen"  # no open transaction holding the workers' lock


def test_without_an_event_loop_writes_commit_as_they_go(tmp_path):
    path = tmp_path / "p.sqlite"
    with JobStore(path) as store:
        _seen(store, "a" * 64)
        assert _others_see(path, "a" * 64) == "seen"


async def test_the_provider_commits_before_every_publish(relay_url, openai_double, tmp_path):
    """The provider's pool runs the store's flush before it sends anything, and the result is
    on disk when the customer holds it (a crash after publishing republishes, never re-runs)."""
    path = tmp_path / "p.sqlite"
    async with serving(relay_url, openai_double.base_url, path) as provider:
        assert provider.store.flush in provider.pool.before_publish
        calls = []
        provider.pool.before_publish.append(lambda: calls.append(provider.store._open))
        async with customer(relay_url) as client:
            outcome = await client.ask("committed first", timeout=30)
        assert calls and not any(calls)  # the store's flush ran first: nothing left open at any send
        row = sqlite3.connect(str(path)).execute("SELECT result_json FROM jobs WHERE request_id = ?",
                                                 (outcome.job_id,)).fetchone()
    assert row is not None and outcome.result_event_id in row[0]
