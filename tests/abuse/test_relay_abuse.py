"""The relay under abuse: each attack runs against a relay in its own process while an honest
client keeps publishing and reading back; the bounds asserted are memory (RSS ceiling), no
honest event lost, and the attacker answered with a reason. Latency figures are printed
(bench/abuse.py compares them with a quiet run), never asserted."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import pytest

from nexus_relay import RelayConfig, running_relay
from nexus_relay.store import EventStore, PendingWrite
from pylon.nostr import Keys

from tests.abuse import relay_attacks
from tests.abuse.harness import RelayProcess, note, publish_many, stalled_reader
from tests.e2e.helpers import wait_for

pytestmark = [pytest.mark.embedded_relay, pytest.mark.timeout(120)]

# Ceilings: an idle relay process is ~45-60 MB here; each attack's memory is bounded by a
# per-connection budget (8 MiB outbox, 5,000 filter values), so 160 MB leaves room for
# the publisher's in-flight events and the allocator. Before the fix: 655 MB and 1.16 GB.
RSS_CEILING_MB = 160


def _clean_log(relay: RelayProcess) -> str:
    log = relay.log()
    assert "Traceback" not in log, log[-3000:]
    return log


async def _under_attack(name: str, attack: Callable[[RelayProcess], Awaitable[dict[str, Any]]]) -> tuple[dict, str]:
    """Run one attack against a fresh relay process; assert what holds for every attack (no
    honest event lost, RSS under the ceiling, no traceback); return its figures and log."""
    async with RelayProcess() as relay:
        figures = await attack(relay)
        print(f"{name}:", figures)
        assert figures["honest_lost"] == 0, figures
        assert figures["peak_rss_mb"] < RSS_CEILING_MB, figures
        return figures, _clean_log(relay)


async def test_slow_consumer_is_disconnected_and_memory_stays_bounded():
    figures, log = await _under_attack("slow consumer", relay_attacks.slow_consumer)
    assert figures["flood_accepted"] == 300
    assert "slow consumer" in log


async def test_subscription_index_amplification_is_refused():
    figures, _ = await _under_attack("index amplification", relay_attacks.index_amplification)
    assert figures["attacker_answers"] == 4 * 200  # every REQ answered
    # two filters of 1,000 values = 2,000 per REQ: the 5,000-value budget admits 2 per connection
    assert figures["attacker_accepted"] == 4 * 2


async def test_expensive_queries_do_not_stall_other_clients():
    figures, _ = await _under_attack("query stall", relay_attacks.query_stall)
    assert figures["attacker_answers"] == figures["attacker_sent"]  # each REQ/COUNT got an answer


async def test_poisoned_events_never_fail_honest_ones():
    figures, _ = await _under_attack("poison batch", relay_attacks.poison_batch)
    assert figures["poison_accepted"] == 0  # refused at parse time with invalid:


async def test_far_future_since_always_gets_a_terminal_answer():
    async with RelayProcess() as relay:
        out = await relay_attacks.far_future_since(relay)
        assert out["int_1e30"][:2] == ["CLOSED", "a"] and out["int_1e30"][2].startswith("invalid:")
        assert out["float_1e30"][:2] == ["CLOSED", "b"] and out["float_1e30"][2].startswith("invalid:")
        assert out["max_safe"] == ["EOSE", "c"]
        _clean_log(relay)


def test_one_failing_event_never_rolls_back_its_batch(tmp_path):
    """The writer's per-event savepoint: an event that SQLite cannot store (here an
    expiration past 2^63, which only the relay's parse-time check would refuse) fails alone;
    the honest events committed in the same transaction are stored."""
    store = EventStore(tmp_path / "r.sqlite", fsync=False)
    store.open()
    loop = asyncio.new_event_loop()
    try:
        store.start(loop)
        keys = Keys.generate()
        good = [note(keys, f"good {i}") for i in range(5)]
        bad = note(keys, "bad", tags=[["expiration", str(10**23)]])
        batch = [PendingWrite(e, e.to_json()) for e in (good[0], good[1], bad, *good[2:])]
        done: asyncio.Future = loop.create_future()
        store.submit(batch, done.set_result)
        results = loop.run_until_complete(asyncio.wait_for(done, 10))
        assert [r[0] for r in results] == [True, True, False, True, True, True]
        assert results[2][1].startswith("error:")
        assert store.stored_count() == 5
    finally:
        store.close()
        loop.close()


async def test_slow_consumer_is_counted_and_told_why():
    """In process, with a 256 KB budget: the stalled subscriber is closed and counted under
    the `slow-consumer` reason (exported as a rejection reason in /metrics)."""
    async with running_relay(config=RelayConfig(max_outbox_bytes=256 << 10)) as relay:
        stalled = await stalled_reader(relay.url)
        try:
            for i in range(10):
                await stalled.send(json.dumps(["REQ", f"s{i}", {"kinds": [1], "limit": 0}]))
            keys = Keys.generate()
            # 10 subs x 100 x 30 KB = 30 MB: more than loopback's socket buffers can absorb
            events = [note(keys, f"{i:05d}" + "x" * 30_000) for i in range(100)]
            assert await publish_many(relay.url, events, window=20) == 100
            await wait_for(lambda: relay.stats.rejections.get("slow-consumer"), timeout=10,
                           what="the stalled subscriber counted as a slow consumer")
            assert relay.stats.rejections["slow-consumer"] == 1
            stalled_conns = [c for c in relay.connections if len(c.subs) == 10]
            assert stalled_conns and all(c.closed for c in stalled_conns)  # closing (its close handshake cannot finish)
        finally:
            stalled.transport.abort()
