"""The NWC service under abuse: a swarm of unknown keys gets a bounded number of signed
UNAUTHORIZED replies in all (not one each), the issued connection keeps working, and
replays are refused by a rolling window (by id and created_at) instead of a wiped set."""

from __future__ import annotations

import asyncio
import time

import pytest

from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from tests.abuse.harness import count_until_quiet, nwc_strangers
from tests.e2e.helpers import wait_for
from wallet import connect_wallet
from wallet.nwc_proto import RESPONSE_KIND
from wallet.nwc_service import NwcService
from wallet.replay import ReplayWindow

pytestmark = [pytest.mark.embedded_relay, pytest.mark.timeout(120)]


def test_replay_window_rolls_instead_of_wiping():
    w = ReplayWindow(window_s=600, max_ids=3)
    now = 1_000_000.0
    assert w.check("a", int(now), now) is None
    assert w.check("a", int(now), now + 1) == "replayed"
    assert w.check("old", int(now - 601), now) == "too old"
    assert w.check("future", int(now + 3600), now) == "dated in the future"
    for name in ("b", "c", "d"):  # past max_ids the oldest is forgotten and the horizon moves up
        assert w.check(name, int(now) + 1, now + 1) is None
    assert len(w) == 3 and w.horizon == now
    assert w.check("a", int(now) - 1, now + 2) == "too old"  # 'a' is forgotten but still not replayable
    later = now + 700  # ids age out; nothing from before the window is checkable, so it is refused
    assert w.check("b", int(now) + 1, later) == "too old" and len(w) == 0


async def test_stranger_swarm_gets_bounded_replies_and_the_owner_is_still_served(relay_url, dev_ledger):
    dev_ledger.fund("svc", 50_000)
    service = NwcService(dev_ledger.wallet("svc"), [relay_url])
    conn = service.new_connection(name="owner")
    async with service.running():
        await asyncio.wait_for(service.ready.wait(), 10)
        owner = await connect_wallet(service.uri_for(conn))
        try:
            async with RelayPool([relay_url]) as pool:
                replies = pool.subscribe([Filter.of(kinds=[RESPONSE_KIND], authors=[service.pubkey], limit=0)])
                await replies.open()
                strangers = nwc_strangers(service.pubkey, 300)
                started = time.monotonic()
                await asyncio.gather(*(pool.publish(ev, timeout=10) for ev in strangers))
                assert await owner.balance() == 50_000  # the owner is answered during the swarm
                await wait_for(lambda: service.stats["unauthorized"] >= 300, what="the service to see the swarm")
                elapsed = time.monotonic() - started
                answered = await count_until_quiet(replies)
            # burst 20 + 2/s; the owner's own reply is one more
            assert answered <= 20 + 2 * elapsed + 2, answered
            assert service.stats["unauthorized"] == 300
        finally:
            await owner.aclose()
