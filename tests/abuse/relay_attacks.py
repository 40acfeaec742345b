"""Attacks on the relay, each run while an honest client keeps publishing and reading back.

Each returns a dict of figures (peak relay RSS, honest p50/p99, lost honest events, what
the attacker got back); tests/abuse/test_relay_abuse.py asserts the bounds and
bench/abuse.py prints them next to a run without the attack.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import websockets

from pylon.nostr import Keys

from tests.abuse.harness import TIMEOUT, HonestClient, RelayProcess, connect, note, publish_many, stalled_reader


def _figures(relay: RelayProcess, honest: HonestClient, **extra: Any) -> dict[str, Any]:
    return {"peak_rss_mb": round(relay.peak_mb, 1), "rss_after_mb": round(relay.rss(), 1),
            "honest_p50_ms": round(honest.p(0.5), 1), "honest_p99_ms": round(honest.p(0.99), 1),
            "honest_rounds": len(honest.latencies), "honest_lost": honest.lost, **extra}


async def _drain_replies(ws, until: float, want: int) -> list[list]:
    """Read frames until `want` terminal answers (EOSE/CLOSED/COUNT/NOTICE) or the deadline."""
    got: list[list] = []
    terminal = 0
    while terminal < want and time.monotonic() < until:
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, until - time.monotonic())))
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            break
        if msg[0] in ("EOSE", "CLOSED", "COUNT", "NOTICE"):
            terminal += 1
            got.append(msg)
    return got


async def baseline(relay: RelayProcess, rounds: int = 40) -> dict[str, Any]:
    honest = await HonestClient(relay.url, rounds=rounds).run()
    return _figures(relay, honest)


async def slow_consumer(relay: RelayProcess, subs: int = 20, events: int = 300, size: int = 60_000,
                        rounds: int = 40) -> dict[str, Any]:
    """A subscriber with `subs` broad REQs that never reads, while large events are published:
    every event is copied into its outbox `subs` times."""
    attacker = await stalled_reader(relay.url)
    try:
        for i in range(subs):
            await attacker.send(json.dumps(["REQ", f"slow{i}", {"kinds": [1], "limit": 0}]))
        keys = Keys.generate()
        big = [note(keys, secrets.token_hex(size // 2)[:size]) for _ in range(events)]
        honest = HonestClient(relay.url, rounds=rounds)
        _, accepted = await asyncio.gather(honest.run(), publish_many(relay.url, big, window=50, after=honest.ready))
    finally:
        attacker.transport.abort()
    return _figures(relay, honest, flood_accepted=accepted)


async def index_amplification(relay: RelayProcess, conns: int = 4, reqs: int = 200, values: int = 1000,
                              rounds: int = 40) -> dict[str, Any]:
    """`conns` connections each send `reqs` REQs of two filters with `values` distinct tag
    values each (fresh random strings: nothing is shared in the subscription index)."""
    # frames are built before the honest client starts: building them is the test process's
    # CPU, not the relay's, and would otherwise starve the honest client's own loop
    frames = [[json.dumps(["REQ", f"amp{i}", *[{"#t": [secrets.token_hex(8) for _ in range(values)]}
                                               for _ in range(2)]]) for i in range(reqs)] for _ in range(conns)]
    attackers = [await connect(relay.url) for _ in range(conns)]
    answers: list[list] = []
    honest = HonestClient(relay.url, rounds=rounds)

    async def flood(ws, mine: list[str]) -> None:
        await honest.ready.wait()
        for frame in mine:
            await ws.send(frame)
        answers.extend(await _drain_replies(ws, time.monotonic() + 30, reqs))

    try:
        await asyncio.gather(honest.run(), *(flood(ws, mine) for ws, mine in zip(attackers, frames)))
    finally:
        for ws in attackers:
            await ws.close()
    refused = sum(1 for m in answers if m[0] == "CLOSED")
    return _figures(relay, honest, attacker_answers=len(answers), attacker_refused=refused,
                    attacker_accepted=sum(1 for m in answers if m[0] == "EOSE"))


async def query_stall(relay: RelayProcess, stored: int = 3000, conns: int = 2, reqs: int = 10,
                      rounds: int = 40) -> dict[str, Any]:
    """Expensive REQs (200 filters x limit 500 over `stored` events) and COUNTs (200 tag
    filters, UNIONed) from `conns` connections while the honest client works."""
    keys = Keys.generate()
    now = int(time.time())
    await publish_many(relay.url, [note(keys, f"stored {i}", tags=[["t", f"tag{i % 50}"]], created_at=now - i)
                                   for i in range(stored)])
    attackers = [await connect(relay.url) for _ in range(conns)]
    answers: list[list] = []
    honest = HonestClient(relay.url, rounds=rounds)

    async def flood(ws) -> None:
        await honest.ready.wait()
        for i in range(reqs):
            await ws.send(json.dumps(["REQ", f"q{i}", *[{"kinds": [1], "until": now - j, "limit": 500}
                                                         for j in range(200)]]))
            await ws.send(json.dumps(["COUNT", f"c{i}", *[{"#t": [f"tag{j % 50}", f"x{j}"], "since": j}
                                                          for j in range(200)]]))
        answers.extend(await _drain_replies(ws, time.monotonic() + 40, 2 * reqs))

    try:
        await asyncio.gather(honest.run(), *(flood(ws) for ws in attackers))
    finally:
        for ws in attackers:
            await ws.close()
    return _figures(relay, honest, attacker_sent=2 * reqs * conns, attacker_answers=len(answers),
                    attacker_closed=sum(1 for m in answers if m[0] == "CLOSED"))


async def poison_batch(relay: RelayProcess, events: int = 300, rounds: int = 40) -> dict[str, Any]:
    """Events whose NIP-40 expiration (10^23) overflows SQLite, published while honest
    events are committed in the same group-commit batches."""
    keys = Keys.generate()
    bad = [note(keys, f"bad {i}", tags=[["expiration", str(10**23)]]) for i in range(events)]
    honest = HonestClient(relay.url, rounds=rounds, pause=0.0)
    _, accepted = await asyncio.gather(honest.run(), publish_many(relay.url, bad, after=honest.ready))
    return _figures(relay, honest, poison_accepted=accepted, honest_errors=honest.errors[:3])


async def far_future_since(relay: RelayProcess) -> dict[str, Any]:
    """REQs whose since is 10^30, 1e30 and 2^53-1: each must get a terminal answer."""
    out: dict[str, Any] = {}
    ws = await connect(relay.url)
    try:
        for name, frame in (("int_1e30", '["REQ","a",{"since":' + str(10**30) + '}]'),
                            ("float_1e30", '["REQ","b",{"since":1e30}]'),
                            ("max_safe", '["REQ","c",{"since":' + str(2**53 - 1) + '}]')):
            await ws.send(frame)
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            out[name] = reply
    finally:
        await ws.close()
    return out
