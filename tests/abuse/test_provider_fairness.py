"""Provider fairness and retention: a swarm of fresh keys (or one greedy key) cannot take the
whole queue or every backend slot; finished jobs are pruned; the WAL stays bounded."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from pylon.jobs.nip90 import JobRequest
from pylon.nostr.keys import Keys
from pylon.provider.admission import Admission
from pylon.provider.jobstore import WAL_SIZE_LIMIT, JobStore
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import customer, serving, wait_for

pytestmark = pytest.mark.timeout(120)


def test_fresh_keys_share_half_the_queue_and_one_key_its_share():
    adm = Admission(max_pending=16, concurrency=2)
    adm.served("regular")
    admitted = 0
    for i in range(40):  # a swarm: 40 fresh keys, one job each
        if adm.refuse(f"fresh{i}") is None:
            adm.admit(f"fresh{i}")
            admitted += 1
    assert admitted == 8  # half of 16
    assert "new customers" in adm.refuse("fresh-41")
    assert adm.refuse("regular") is None  # a returning customer still gets in
    for _ in range(adm.per_customer_pending):
        adm.admit("regular")
    assert "too many jobs from you" in adm.refuse("regular")
    for i in range(8):
        adm.release(f"fresh{i}")
    assert adm.fresh_pending == 0 and adm.refuse("fresh-new") is None


async def test_backend_slots_go_round_robin_between_customers():
    adm = Admission(max_pending=100, concurrency=2)
    order: list[str] = []
    release = asyncio.Event()

    async def job(customer: str) -> None:
        async with adm.slot(customer):
            order.append(customer)
            await release.wait()

    greedy = [asyncio.create_task(job("greedy")) for _ in range(10)]
    await asyncio.sleep(0)
    polite = asyncio.create_task(job("polite"))
    await asyncio.sleep(0)
    assert order == ["greedy", "greedy"]  # both slots taken before polite arrived
    release.set()
    await asyncio.gather(*greedy, polite)
    # the first freed slot went to polite (0 running), not to greedy's 8 waiting jobs
    assert order.index("polite") == 2


async def test_swarm_of_fresh_keys_does_not_lock_out_a_returning_customer(relay_url, openai_double, tmp_path):
    openai_double.latency_s = 0.3
    keys = Keys.generate()
    regular = Keys.generate()
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", keys=keys,
                       concurrency=2, max_pending=16) as provider:
        async with customer(relay_url, keys=regular) as client:
            assert (await client.ask("first visit", timeout=30)).text  # now a returning customer
            async with RelayPool([relay_url]) as pool:
                swarm = [JobRequest(messages=[{"role": "user", "content": f"swarm {i}"}]).to_event(Keys.generate())
                         for i in range(40)]
                await asyncio.gather(*(pool.publish(ev, timeout=10) for ev in swarm))
            await wait_for(lambda: provider.stats.received >= 41, what="the swarm to arrive")
            assert provider.admission.fresh_pending <= 8
            outcome = await client.ask("still served?", timeout=60)
    assert outcome.text


def test_finished_jobs_are_pruned_after_retention(tmp_path):
    store = JobStore(tmp_path / "p.sqlite")
    try:
        for i in range(5):
            rid = f"{i:064x}"
            store.record_seen(rid, "c" * 64, int(time.time()), "{}")
        store.transition(f"{0:064x}", "error", error="old")
        store.transition(f"{1:064x}", "error", error="recent")
        store._db.execute("UPDATE jobs SET updated_at = ? WHERE request_id = ?", (time.time() - 10 * 86400, f"{0:064x}"))
        store._db.execute("UPDATE jobs SET updated_at = ? WHERE request_id = ?", (time.time() - 10 * 86400, f"{2:064x}"))
        assert store.prune(retention_s=7 * 86400) == 1  # the old finished one; the old *live* one stays
        assert store.get(f"{0:064x}") is None and store.get(f"{2:064x}") is not None
        assert store.get(f"{1:064x}") is not None
    finally:
        store.close()


async def test_wal_is_cut_back_after_checkpoints(tmp_path):
    path = tmp_path / "p.sqlite"
    store = JobStore(path)
    try:
        body = "x" * 4000
        for i in range(4000):  # ~16 MB through the WAL
            store.record_seen(f"{i:064x}", "c" * 64, int(time.time()), body)
        wal = str(path) + "-wal"
        deadline = time.monotonic() + 20
        i = 10_000
        while os.path.getsize(wal) > WAL_SIZE_LIMIT:  # each write after a full checkpoint resets the WAL
            assert time.monotonic() < deadline, f"WAL still {os.path.getsize(wal)} bytes"
            store.record_seen(f"{i:064x}", "c" * 64, int(time.time()), "{}")
            i += 1
            await asyncio.sleep(0.1)
    finally:
        store.close()
