"""Behaviour real relays here won't show on demand, driven by scripted relay DOUBLES:
forged or off-filter events, CLOSED, AUTH demanded after the fact, malformed frames, NIP-11."""

from __future__ import annotations

import json

import pytest

from pylon.errors import RelayError
from pylon.nostr import Event, Filter, Keys
from pylon.nostr.keys import verify_schnorr
from pylon.relay.pool import RelayPool, SubscriptionClosed, fetch_nip11
from tests.pool.relay_doubles import ScriptedRelayDouble, forged_copy, tampered_copy


async def test_forged_tampered_and_off_filter_events_are_dropped():
    keys = Keys.generate()
    good = Event.build(keys, 1, "genuine")
    forged_victim = Event.build(keys, 1, "will be forged")
    tampered_victim = Event.build(keys, 1, "will be tampered")
    off_filter = Event.build(keys, 7, "kind 7, not asked for")

    async def serve(double, ws, msg):
        if msg[0] == "REQ":
            sub = msg[1]
            surrogate = {**good.to_dict(), "content": "\ud800"}  # not valid Unicode: no id
            for payload in (forged_copy(forged_victim), tampered_copy(tampered_victim), surrogate,
                            off_filter.to_dict(), good.to_dict(), good.to_dict()):
                await ws.send(json.dumps(["EVENT", sub, payload]))
            await ws.send(json.dumps(["EVENT", "not-our-sub", good.to_dict()]))
            await ws.send(json.dumps(["EOSE", sub]))

    async with ScriptedRelayDouble(serve) as double:
        async with RelayPool([double.url]) as pool:
            async with pool.subscribe([Filter.of(kinds=[1])]) as sub:
                await sub.wait_eose()
                assert (await sub.next(timeout=5)).id == good.id
                assert sub.pending_events() == 0  # EOSE was handled after every frame before it
            assert pool.stats["invalid"] == 3
            assert pool.stats["unmatched"] == 1
            assert pool.stats["duplicates"] == 1
            assert pool.stats["unknown_sub"] == 1


async def test_real_event_still_arrives_after_a_forged_copy_of_it():
    """A forged copy must not mark the id as seen (dedupe happens only after verification)."""
    keys = Keys.generate()
    event = Event.build(keys, 1, "the real one")

    async def serve(double, ws, msg):
        if msg[0] == "REQ":
            await ws.send(json.dumps(["EVENT", msg[1], forged_copy(event)]))
            await ws.send(json.dumps(["EVENT", msg[1], event.to_dict()]))
            await ws.send(json.dumps(["EOSE", msg[1]]))

    async with ScriptedRelayDouble(serve) as double:
        async with RelayPool([double.url]) as pool:
            async with pool.subscribe([Filter.of(ids=[event.id])]) as sub:
                got = await sub.next(timeout=5)
                assert got.id == event.id and got.sig == event.sig


async def test_closed_subscription_ends_with_visible_error():
    async def refuse(double, ws, msg):
        if msg[0] == "REQ":
            await ws.send(json.dumps(["CLOSED", msg[1], "blocked: this relay serves nobody"]))

    async with ScriptedRelayDouble(refuse) as double:
        async with RelayPool([double.url]) as pool:
            sub = pool.subscribe([Filter.of(kinds=[1])])
            async with sub:
                with pytest.raises(SubscriptionClosed) as info:
                    async for _ in sub:
                        pass
            assert info.value.reasons == {double.url: "blocked: this relay serves nobody"}
            assert "blocked" in str(info.value)
            await sub.wait_eose(timeout=1)  # does not hang on a closed subscription


async def test_malformed_frames_and_notices_do_not_break_the_connection():
    keys = Keys.generate()
    good = Event.build(keys, 1, "after the garbage")

    async def noisy(double, ws, msg):
        if msg[0] == "REQ":
            for junk in ["not json", "{}", "[]", "[1,2]", '["EVENT"]', '["EVENT","x",{"id":1}]',
                         '["OK"]', '["COUNT","x",{}]', '["WHAT"]', '["NOTICE","hello"]']:
                await ws.send(junk)
            await ws.send(json.dumps(["EVENT", msg[1], good.to_dict()]))
            await ws.send(json.dumps(["EOSE", msg[1]]))
        elif msg[0] == "EVENT":
            await ws.send(json.dumps(["OK", msg[1]["id"], True, ""]))

    async with ScriptedRelayDouble(noisy) as double:
        async with RelayPool([double.url]) as pool:
            async with pool.subscribe([Filter.of(kinds=[1])]) as sub:
                assert (await sub.next(timeout=5)).id == good.id
            assert pool.stats["malformed"] == 9
            assert (await pool.publish(Event.build(keys, 1, "still works"))).accepted_by == [double.url]
            assert pool._relays[double.url].connections == 1


def _auth_double(expected_pubkey_holder: dict):
    """A relay double that demands NIP-42 AUTH only *after* an EVENT or REQ arrives."""

    async def on_message(double, ws, msg):
        authed = double.state.get(id(ws), False)
        if msg[0] == "AUTH":
            ev = Event.from_dict(msg[1])
            tags = {t[0]: t[1] for t in ev.tags if len(t) >= 2}
            ok = (ev.kind == 22242 and ev.is_valid() and tags.get("challenge") == "chal-123"
                  and tags.get("relay") == double.url)
            double.state[id(ws)] = ok
            expected_pubkey_holder["pubkey"] = ev.pubkey
            await ws.send(json.dumps(["OK", ev.id, ok, "" if ok else "invalid: bad auth"]))
        elif msg[0] == "EVENT":
            if not authed:
                await ws.send(json.dumps(["OK", msg[1]["id"], False, "auth-required: sign in first"]))
                await ws.send(json.dumps(["AUTH", "chal-123"]))
            else:
                await ws.send(json.dumps(["OK", msg[1]["id"], True, ""]))
        elif msg[0] == "REQ":
            if not authed:
                await ws.send(json.dumps(["CLOSED", msg[1], "auth-required: sign in first"]))
                await ws.send(json.dumps(["AUTH", "chal-123"]))
            else:
                await ws.send(json.dumps(["EOSE", msg[1]]))

    return on_message


async def test_auth_required_ok_triggers_auth_and_one_resend():
    holder: dict = {}
    keys = Keys.generate()
    async with ScriptedRelayDouble(_auth_double(holder)) as double:
        async with RelayPool([double.url], keys=keys) as pool:
            event = Event.build(keys, 1, "after auth")
            result = await pool.publish(event, timeout=5)
            assert result.accepted_by == [double.url]
        assert holder["pubkey"] == keys.public_key
        assert len(double.frames("AUTH")) == 1
        assert [m[1]["id"] for m in double.frames("EVENT")] == [event.id, event.id]


async def test_auth_required_closed_triggers_auth_and_resubscribe():
    keys = Keys.generate()
    async with ScriptedRelayDouble(_auth_double({})) as double:
        async with RelayPool([double.url], keys=keys) as pool:
            async with pool.subscribe([Filter.of(kinds=[1])]) as sub:
                await sub.wait_eose(timeout=5)
                assert not sub.closed and sub.closed_by == {}
        assert len(double.frames("REQ")) == 2 and len(double.frames("AUTH")) == 1


async def test_auth_required_without_keys_is_reported():
    async with ScriptedRelayDouble(_auth_double({})) as double:
        async with RelayPool([double.url]) as pool:
            from pylon.relay.pool import PublishError

            with pytest.raises(PublishError) as info:
                await pool.publish(Event.build(Keys.generate(), 1, "x"), timeout=5)
            assert info.value.result.results[double.url].prefix == "auth-required"
            async with pool.subscribe([Filter.of(kinds=[1])]) as sub:
                with pytest.raises(SubscriptionClosed, match="auth-required"):
                    await sub.next(timeout=5)
        assert double.frames("AUTH") == []


async def test_challenge_on_connect_is_answered_with_signed_22242():
    keys = Keys.generate()
    async with ScriptedRelayDouble(challenge_on_connect="hello-challenge") as double:
        double.on_message = _record_auth_then_default
        async with RelayPool([double.url], keys=keys) as pool:
            await pool.wait_connected()
            async with pool.subscribe([Filter.of(kinds=[1])]) as sub:
                await sub.wait_eose()
        auth = Event.from_dict(double.frames("AUTH")[0][1])
        assert auth.kind == 22242 and auth.pubkey == keys.public_key
        assert ["challenge", "hello-challenge"] in auth.tags and ["relay", double.url] in auth.tags
        assert verify_schnorr(auth.pubkey, auth.sig, bytes.fromhex(auth.id))


async def _record_auth_then_default(double, ws, msg):
    if msg[0] == "AUTH":
        await ws.send(json.dumps(["OK", msg[1]["id"], True, ""]))
    else:
        await ScriptedRelayDouble.default(double, ws, msg)


async def test_fetch_nip11_sends_the_right_accept_header():
    info = {"name": "double", "supported_nips": [1, 11, 42], "limitation": {"max_message_length": 131072}}
    async with ScriptedRelayDouble(nip11=info) as double:
        assert await fetch_nip11(double.url) == info
        async with ScriptedRelayDouble() as plain:  # no NIP-11: a websocket-only endpoint
            with pytest.raises(RelayError, match="NIP-11"):
                await fetch_nip11(plain.url, timeout=2)


async def test_fetch_nip11_errors_are_typed():
    with pytest.raises(RelayError):
        await fetch_nip11("ftp://nope")
    from tests.pool.relay_doubles import free_port

    with pytest.raises(RelayError, match="failed"):
        await fetch_nip11(f"ws://127.0.0.1:{free_port()}", timeout=1)
