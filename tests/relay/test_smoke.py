"""The basic round trip every other suite relies on: publish, OK, query, live delivery."""

from __future__ import annotations

from pylon.nostr import Keys

from tests.relay.helpers import RawClient, note


async def test_publish_query_and_live(relay_url):
    keys = Keys.generate()
    async with RawClient(relay_url) as a, RawClient(relay_url) as b:
        first = note(keys, "first")
        assert await a.publish(first) == ["OK", first.id, True, ""]
        events, end = await b.req("s", {"authors": [keys.public_key]})
        assert [e["id"] for e in events] == [first.id] and end == ["EOSE", "s"]
        second = note(keys, "second")
        assert (await a.publish(second))[2] is True
        live = await b.recv_type("EVENT")
        assert live[1] == "s" and live[2]["id"] == second.id
