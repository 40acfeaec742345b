"""Live subscribers get a regular event before its group commit; its OK waits for the commit.

The commit is held back for real: another SQLite connection holds the database's write lock
(BEGIN IMMEDIATE), so the relay's writer waits on it exactly as it would on a slow disk.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from nexus_relay import running_relay
from pylon.nostr.keys import Keys
from tests.relay.helpers import RawClient, note

pytestmark = [pytest.mark.timeout(60), pytest.mark.embedded_relay]


async def test_regular_event_reaches_subscribers_before_its_commit_and_ok_after(tmp_path):
    db = tmp_path / "relay.sqlite"
    keys = Keys.generate()
    async with running_relay(db) as relay:
        async with RawClient(relay.url) as sub, RawClient(relay.url) as pub:
            await sub.req("live", {"kinds": [1, 0]})
            blocker = sqlite3.connect(db, timeout=1)
            blocker.execute("BEGIN IMMEDIATE")  # the relay's writer now waits for this lock
            try:
                regular = note(keys, "live before commit")
                await pub.send(["EVENT", regular.to_dict()])
                got = await sub.recv_type("EVENT", timeout=5)
                assert got[2]["id"] == regular.id  # delivered while the commit cannot happen
                with pytest.raises(asyncio.TimeoutError):
                    await pub.recv_type("OK", timeout=0.5)  # not acknowledged before it is stored
                profile = note(keys, '{"name":"x"}', kind=0)  # replaceable: waits for its write
                await pub.send(["EVENT", profile.to_dict()])
                with pytest.raises(asyncio.TimeoutError):
                    await sub.recv_type("EVENT", timeout=0.5)
            finally:
                blocker.rollback()
                blocker.close()
            ok = await pub.recv_type("OK", timeout=15)
            assert ok[1] == regular.id and ok[2] is True
            ok = await pub.recv_type("OK", timeout=15)
            assert ok[1] == profile.id and ok[2] is True
            got = await sub.recv_type("EVENT", timeout=5)
            assert got[2]["id"] == profile.id
            assert relay.store.has(regular.id)


async def test_fanout_after_commit_when_configured(tmp_path):
    from nexus_relay.config import RelayConfig

    db = tmp_path / "relay.sqlite"
    keys = Keys.generate()
    async with running_relay(db, config=RelayConfig(fanout_before_commit=False)) as relay:
        async with RawClient(relay.url) as sub, RawClient(relay.url) as pub:
            await sub.req("live", {"kinds": [1]})
            blocker = sqlite3.connect(db, timeout=1)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                await pub.send(["EVENT", note(keys, "after commit").to_dict()])
                with pytest.raises(asyncio.TimeoutError):
                    await sub.recv_type("EVENT", timeout=0.5)
            finally:
                blocker.rollback()
                blocker.close()
            assert (await pub.recv_type("OK", timeout=15))[2] is True
            assert (await sub.recv_type("EVENT", timeout=5))[2]["content"] == "after commit"


async def test_a_burst_keeps_its_order_when_frames_are_written_together(tmp_path):
    """Frames framed in one loop turn go out in one write (nexus_relay.connection): a pipelined
    burst still gets every OK, in order, and the subscriber every event, in order."""
    keys = Keys.generate()
    events = [note(keys, f"burst {i}") for i in range(300)]
    async with running_relay(tmp_path / "relay.sqlite") as relay:
        async with RawClient(relay.url) as sub, RawClient(relay.url) as pub:
            await sub.req("live", {"kinds": [1], "authors": [keys.public_key]})
            for ev in events:  # no waiting between them: the relay batches and answers in bursts
                await pub.send(["EVENT", ev.to_dict()])
            oks = [await pub.recv_type("OK") for _ in events]
            got = [(await sub.recv_type("EVENT"))[2]["id"] for _ in events]
    assert [ok[1] for ok in oks] == [ev.id for ev in events] and all(ok[2] for ok in oks)
    assert got == [ev.id for ev in events]
