"""Liveness (issue 10, rule 6): announcements expire (NIP-40) and are refreshed while the
backend is healthy; a provider whose backend is down withdraws its announcement; `pylon
providers` lists live providers with full npubs, context, price, last activity and score.
Real providers, a real relay (it drops expired events), real `pylon providers` processes."""

from __future__ import annotations

import json
import time

import pytest

from pylon.jobs.nip89 import build_announcement, discover, parse_announcement
from pylon.nostr.keys import Keys
from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from pylon.customer.reviews import KIND_LABEL
from tests.e2e.helpers import serving, wait_for
from tests.e2e.test_cli_jobs import _pylon

pytestmark = pytest.mark.timeout(120)


async def _listed(relay_url: str, pubkey: str) -> bool:
    async with RelayPool([relay_url]) as pool:
        return any(p.pubkey == pubkey and p.live() for p in await discover(pool, timeout=5.0))


async def _wait_listed(relay_url: str, pubkey: str, want: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await _listed(relay_url, pubkey)) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"provider {'never' if want else 'still'} listed after {timeout}s")


def test_announcement_carries_an_expiration_and_reads_back():
    keys = Keys.generate()
    now = int(time.time())
    info = parse_announcement(build_announcement(keys, models=["m"], created_at=now, expires_in_s=360,
                                                 delivery=["key"]))
    assert info.expires_at == now + 360 and info.live(now) and not info.live(now + 361)
    assert info.delivery == ["key"]
    old = parse_announcement(build_announcement(keys, models=["m"], created_at=now - 7200))  # other software: no expiry
    assert old.expires_at is None and not old.live(now) and old.live(now, stale_after_s=10_000)


async def test_dead_provider_disappears_after_its_expiry(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", free=True,
                       announce_interval_s=0.5, announce_ttl_s=2) as provider:
        pubkey = provider.pubkey
        assert provider.announcing
        code, out, err = await _pylon("providers", "--relay", relay_url, "--json", home=tmp_path / "c")
        assert code == 0, err
        rows = {r["pubkey"]: r for r in json.loads(out)}
        assert rows[pubkey]["live"] and rows[pubkey]["npub"] == provider.keys.npub  # the full npub
        assert rows[pubkey]["expires_at"] is not None
    # stopped without a word (as if killed): its last announcement expires and the relay drops it
    await _wait_listed(relay_url, pubkey, False)
    code, out, err = await _pylon("providers", "--relay", relay_url, "--json", home=tmp_path / "c")
    assert code == 0 and pubkey not in out, out


async def test_provider_with_its_backend_down_stops_announcing(relay_url, tmp_path):
    from tests.peers.openai_double import OpenAIDouble

    backend = OpenAIDouble().start_in_thread()
    try:
        async with serving(relay_url, backend.base_url, tmp_path / "p.sqlite", free=True,
                           health_interval_s=0.2, announce_interval_s=0.5) as provider:
            await _wait_listed(relay_url, provider.pubkey, True)
            backend.stop_thread()
            await wait_for(lambda: not provider.announcing, 20, "the provider to withdraw")
            await _wait_listed(relay_url, provider.pubkey, False)  # withdrawn at once, not at expiry
            code, out, err = await _pylon("providers", "--relay", relay_url, "--all", "--json", home=tmp_path / "c")
            assert code == 0 and provider.pubkey not in out, out
    finally:
        backend.stop_thread()


async def test_providers_table_shows_score_and_full_npub(relay_url, openai_double, tmp_path, monkeypatch):
    """The table: full npub, models, and this client's score after one delivered job."""
    from pylon.customer.client import PylonClient

    home = tmp_path / "c"
    monkeypatch.setenv("PYLON_HOME", str(home))  # the client's scoreboard and the CLI's are the same file
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", free=True) as provider:
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            await client.ask("score me", timeout=20)
        code, out, err = await _pylon("providers", "--relay", relay_url, home=home)
    assert code == 0, err
    assert provider.keys.npub in "".join(ch for ch in out if ch not in "│ \n")  # whole, folded over lines
    assert "1/1 ok" in out and "double-model" in out


async def test_asking_for_a_model_the_provider_never_offered_does_not_count_against_it(relay_url, openai_double,
                                                                                       tmp_path):
    """`pylon ask --model typo`: the provider's refusal is the customer's mistake, so neither
    the local score nor a public review calls it a failure (its announcement lists its models).
    A model it does offer still counts: the delivered job afterwards."""
    from pylon.customer.client import PylonClient
    from pylon.customer.scoreboard import Scoreboard
    from pylon.errors import JobError

    board = Scoreboard(tmp_path / "scores.sqlite")
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", free=True) as provider:
        await _wait_listed(relay_url, provider.pubkey, True)
        customer = Keys.generate()
        async with PylonClient([relay_url], keys=customer, scoreboard=board, publish_reviews=True) as client:
            with pytest.raises(JobError, match="not served"):
                await client.ask("hi", model="no-such-model", timeout=5)
            await client.ask("hi", timeout=20)
        async with RelayPool([relay_url]) as pool:  # the client waits for its reviews when it closes
            reviews = await pool.query([Filter.of(kinds=[KIND_LABEL], authors=[customer.public_key])], timeout=5)
    score = board.scores()[provider.pubkey]
    assert (score.delivered, score.failed) == (1, 0), score
    labels = [t[1] for e in reviews for t in e.tags if t[0] == "l"]
    assert labels == ["delivered"], labels
    board.close()
