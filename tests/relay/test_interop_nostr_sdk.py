"""Interop: rust-nostr's `nostr-sdk` Client (code nobody here wrote) publishes to and reads
from nexus_relay, including replaceable events, deletions, COUNT-free queries and live
subscriptions; events written by pylon.nostr are read and verified by nostr-sdk."""

from __future__ import annotations

import asyncio
import datetime
import json

import nostr_sdk as sdk

from pylon.nostr import Event, Keys

from tests.relay.helpers import RawClient

TIMEOUT = datetime.timedelta(seconds=10)


async def _client(url: str) -> tuple[sdk.Client, sdk.RelayUrl]:
    client = sdk.ClientBuilder().build()
    relay_url = sdk.RelayUrl.parse(url)
    await client.add_relay(relay_url)
    await client.connect()
    return client, relay_url


def _sign(keys: sdk.Keys, kind: int, content: str, tags: list[list[str]] = ()) -> sdk.Event:
    builder = sdk.EventBuilder(sdk.Kind(kind), content).tags([sdk.Tag.parse(t) for t in tags])
    return builder.finalize(keys)


async def test_nostr_sdk_publishes_and_reads(relay_url):
    keys = sdk.Keys.generate()
    client, url = await _client(relay_url)
    try:
        content = 'interop "quotes" \\ é 🚀 \n tab\t'
        ev = _sign(keys, 1, content, [["t", "interop"], ["p", keys.public_key().to_hex()]])
        out = await client.send_event(ev)
        assert url in out.success and not out.failed
        flt = sdk.Filter().kind(sdk.Kind(1)).author(keys.public_key())
        got = await client.fetch_events(sdk.ReqTarget.single(url, [flt]), TIMEOUT)
        assert [e.id().to_hex() for e in got] == [ev.id().to_hex()]
        assert got[0].content() == content and got[0].verify()
        # the same event read by our own parser has the right id and signature
        mine = Event.from_json(got[0].as_json())
        mine.verify()
        # a duplicate is still a success for the client
        again = await client.send_event(ev)
        assert url in again.success
    finally:
        await client.shutdown()


async def test_nostr_sdk_reads_events_written_by_pylon(relay_url):
    keys = Keys.generate()
    ours = Event.build(keys, 1, "from pylon é", [["t", "pylon-interop"]])
    async with RawClient(relay_url) as raw:
        assert (await raw.publish(ours))[2] is True
    client, url = await _client(relay_url)
    try:
        flt = sdk.Filter().hashtag("pylon-interop").author(sdk.PublicKey.parse(keys.public_key))
        got = await client.fetch_events(sdk.ReqTarget.single(url, [flt]), TIMEOUT)
        assert [e.id().to_hex() for e in got] == [ours.id]
        assert got[0].verify_signature() and got[0].verify_id()
    finally:
        await client.shutdown()


async def test_nostr_sdk_bad_event_is_refused(relay_url):
    keys = sdk.Keys.generate()
    good = json.loads(_sign(keys, 1, "original").as_json())
    good["content"] = "tampered"
    async with RawClient(relay_url) as raw:
        ok = await raw.publish(good)
        assert ok[:3] == ["OK", good["id"], False]


async def test_nostr_sdk_replaceable_and_deletion(relay_url):
    keys = sdk.Keys.generate()
    client, url = await _client(relay_url)
    try:
        now = sdk.Timestamp.now().as_secs()
        old = sdk.EventBuilder(sdk.Kind(0), '{"name":"old"}').custom_created_at(sdk.Timestamp.from_secs(now - 10))
        new = sdk.EventBuilder(sdk.Kind(0), '{"name":"new"}').custom_created_at(sdk.Timestamp.from_secs(now - 5))
        old_ev, new_ev = old.finalize(keys), new.finalize(keys)
        assert url in (await client.send_event(old_ev)).success
        assert url in (await client.send_event(new_ev)).success
        stale = await client.send_event(old_ev)
        assert url in stale.failed  # the relay refused the older version
        meta = sdk.Filter().kind(sdk.Kind(0)).author(keys.public_key())
        got = await client.fetch_events(sdk.ReqTarget.single(url, [meta]), TIMEOUT)
        assert [e.id().to_hex() for e in got] == [new_ev.id().to_hex()]

        note_ev = _sign(keys, 1, "delete me")
        await client.send_event(note_ev)
        deletion = _sign(keys, 5, "", [["e", note_ev.id().to_hex()]])
        assert url in (await client.send_event(deletion)).success
        notes = sdk.Filter().kind(sdk.Kind(1)).author(keys.public_key())
        assert list(await client.fetch_events(sdk.ReqTarget.single(url, [notes]), TIMEOUT)) == []
    finally:
        await client.shutdown()


async def test_nostr_sdk_live_subscription(relay_url):
    keys = sdk.Keys.generate()
    reader, url = await _client(relay_url)
    writer, _ = await _client(relay_url)
    try:
        flt = sdk.Filter().kind(sdk.Kind(1)).author(keys.public_key())
        notifications = reader.notifications()
        await reader.subscribe(sdk.ReqTarget.single(url, [flt]))

        async def next_matching(predicate):
            while True:
                item = await notifications.next()
                assert item is not None and not item.is_shutdown()
                if predicate(item):
                    return item

        # publish only after the relay answered the REQ with EOSE, so the live path is tested
        await asyncio.wait_for(next_matching(
            lambda n: n.is_message() and n.message.as_enum().is_end_of_stored_events()), 10)
        ev = _sign(keys, 1, "live to rust")
        assert url in (await writer.send_event(ev)).success
        item = await asyncio.wait_for(next_matching(lambda n: n.is_new_event()), 10)
        assert item.event.id().to_hex() == ev.id().to_hex()
    finally:
        await reader.shutdown()
        await writer.shutdown()
