"""A targeted ask (`provider=`) to a provider that is gone (newcomer trial, bug 3).

A provider that withdrew its NIP-89 announcement (a NIP-09 deletion, as a Pylon provider
publishes when it drains or its backend goes down) is known not to take jobs: the ask ends as
soon as the client's live view says so (pylon.customer.live), not after the whole timeout. One
that never announced is unknown: the ask waits, and its timeout names the provider (npub). A
provider both targeted and avoided could never answer: refused before anything is sent.

Scripted providers (real keys, real announcements and withdrawals) on the real embedded relay."""

from __future__ import annotations

import asyncio

import pytest

from pylon.errors import ConfigError, NoProviderAnswered, ProviderUnavailable
from pylon.jobs.nip89 import build_withdrawal
from tests.e2e.helpers import customer
from tests.market.test_failover_gaps import watching
from tests.payments.helpers import ScriptedProvider

pytestmark = pytest.mark.timeout(60)


async def _answers(p: ScriptedProvider, req) -> None:
    await p.feedback(req, "processing")
    await p.result(req, f"answer from {p.pubkey[:8]}")


async def _withdrawn(relay_url: str) -> ScriptedProvider:
    gone = ScriptedProvider(relay_url, None)
    await gone.__aenter__()
    await gone.announce()
    assert gone.pool is not None
    await gone.pool.publish(build_withdrawal(gone.keys, reason="draining"))  # then it stops listening
    return gone


async def test_withdrawn_provider_fails_fast(relay_url):
    gone = await _withdrawn(relay_url)
    try:
        async with customer(relay_url) as client:
            with pytest.raises(ProviderUnavailable) as info:
                await asyncio.wait_for(client.ask("hello?", provider=gone.keys.npub, timeout=600), 15)
    finally:
        await gone.__aexit__(None, None, None)
    message, hint = info.value.parts()
    assert gone.keys.npub in message and "withdrew its announcement" in message and "not taking jobs" in message
    assert "pylon providers" in hint and info.value.provider == gone.pubkey
    assert info.value.exit_code == 4


async def test_withdrawn_provider_with_failover_goes_to_a_live_one(relay_url):
    gone = await _withdrawn(relay_url)
    try:
        async with ScriptedProvider(relay_url, None) as b:
            b.serve(lambda req: _answers(b, req))
            await b.announce()
            async with customer(relay_url) as client:
                outcome = await asyncio.wait_for(
                    client.ask("hello?", provider=gone.pubkey, failover=True, timeout=600), 15)
    finally:
        await gone.__aexit__(None, None, None)
    assert outcome.provider == b.pubkey
    (attempt,) = outcome.failover
    assert attempt["providers"] == [gone.pubkey] and attempt["reason"] == "unavailable"
    assert b.requests[0].encrypted and b.requests[0].providers == [b.pubkey]


async def test_unknown_provider_times_out_naming_it(relay_url):
    from pylon.nostr.keys import Keys

    nobody = Keys.generate()
    async with customer(relay_url) as client:
        with pytest.raises(NoProviderAnswered) as info:
            await client.ask("hello?", provider=nobody.public_key, timeout=1.5)
    assert not isinstance(info.value, ProviderUnavailable)  # unknown is not gone: it waited
    message, hint = info.value.parts()
    assert f"the targeted provider {nobody.npub} never answered" in message and "no live announcement" in message
    assert "pylon providers" in hint


async def test_live_targeted_provider_is_not_taken_for_gone(relay_url):
    async with ScriptedProvider(relay_url, None) as a:
        a.serve(lambda req: _answers(a, req))
        await a.announce()
        async with customer(relay_url) as client:
            outcome = await client.ask("hello", provider=a.keys.npub, timeout=20)
    assert outcome.provider == a.pubkey


async def test_targeted_and_avoided_is_refused_before_sending(relay_url):
    async with ScriptedProvider(relay_url, None) as a:
        async with watching(relay_url) as seen, customer(relay_url) as client:
            with pytest.raises(ConfigError, match="avoided"):
                await asyncio.wait_for(client.ask("hi", provider=a.pubkey, avoid=[a.keys.npub], timeout=600), 10)
    assert seen == []


async def test_a_provider_back_since_the_view_was_read_is_not_taken_for_gone(relay_url, monkeypatch):
    """The client's view (cached 30 s) saw the withdrawal; the provider has announced again
    since: a view older than LIVE_RECHECK_S is read again before the ask is ended."""
    import pylon.customer.client as client_module

    monkeypatch.setattr(client_module, "LIVE_RECHECK_S", 0.5)
    gone = await _withdrawn(relay_url)
    try:
        async with customer(relay_url) as client:
            assert client._live is not None
            client._live.refresh()
            await client._live.get(5.0)
            assert client._live.gone(gone.pubkey) is not None  # the cached view: withdrawn
            await asyncio.sleep(1.1)  # a later second: the new announcement outdates the deletion
            await gone.announce()

            async def slow(req) -> None:  # after the client has read its view again
                await asyncio.sleep(0.5)
                await _answers(gone, req)
            gone.serve(slow)
            outcome = await asyncio.wait_for(client.ask("back?", provider=gone.pubkey, timeout=600), 15)
    finally:
        await gone.__aexit__(None, None, None)
    assert outcome.provider == gone.pubkey


async def test_an_ask_avoiding_every_live_provider_ends_at_once(relay_url, openai_double, tmp_path):
    """Untargeted, with every live provider avoided (they ignore the job): the ask ends as soon
    as the live view says so, naming them, with a hint; it used to wait its whole timeout. With
    one live provider not avoided it is served as usual."""
    from tests.e2e.helpers import serving

    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite") as provider:
        async with customer(relay_url) as client:
            with pytest.raises(NoProviderAnswered, match="every live provider .* is avoided") as caught:
                await client.ask("nobody may answer", avoid=[provider.keys.npub], timeout=30)
            assert provider.keys.npub in str(caught.value) and "avoid" in (caught.value.hint or "")
            assert provider.stats.received == 0
            other = ScriptedProvider(relay_url, None)
            async with other:
                other.serve(lambda req: _answers(other, req))
                await other.announce()
                client._live.refresh(max_age_s=0)
                outcome = await client.ask("someone may", avoid=[provider.keys.npub], timeout=30)
    assert outcome.provider == other.pubkey
