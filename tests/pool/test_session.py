"""Protocol tests for the sans-I/O relay session (pylon.relay.session): frames in -> events and
frames out, with no socket and no event loop. Real keys and real signatures throughout."""

from __future__ import annotations

import json

import pytest

from pylon.nostr import Event, Filter, Keys
from pylon.nostr.kinds import AUTH as KIND_CLIENT_AUTH
from pylon.relay.session import (
    Admit,
    AuthChallenged,
    AuthFinished,
    AuthState,
    ClosedByRelay,
    CountReceived,
    CountRefused,
    EoseReceived,
    EventReceived,
    FrameMalformed,
    NoticeReceived,
    OkReceived,
    RelaySession,
    ReqSent,
    SubscriptionState,
    Verifier,
    backoff_delay,
)

URL = "ws://relay.test"
OTHER = "ws://other.test"


def _session(keys: Keys | None = None, *subs: SubscriptionState) -> RelaySession:
    session = RelaySession(URL, keys, {s.sub_id: s for s in subs})
    session.connection_made()
    return session


def _frame(*parts: object) -> str:
    return json.dumps(list(parts))


def test_req_then_eose_settles_the_subscription():
    sub = SubscriptionState("s1", [Filter.of(kinds=[1], limit=10)])
    session = _session(None, sub)
    frame = session.req(sub)
    assert json.loads(frame) == ["REQ", "s1", {"kinds": [1], "limit": 10}]
    assert session.req(sub) is None  # this connection already carries it
    assert not sub.eose_done
    assert session.receive(_frame("EOSE", "s1")) == [EoseReceived("s1")]
    assert sub.eose_done


def test_events_are_deduped_before_verification_and_checked_against_filters():
    keys = Keys.generate()
    sub = SubscriptionState("s1", [Filter.of(kinds=[1])])
    session = _session(None, sub)
    good = Event.build(keys, 1, "hello")
    off = Event.build(keys, 7, "not asked for")
    forged = {**good.to_dict(), "content": "changed"}  # id no longer matches

    checked: list[str] = []
    verifier = Verifier()

    def counting(event: Event) -> bool:
        checked.append(event.id)
        return verifier(event)

    verdicts = []
    for payload in (forged, good.to_dict(), good.to_dict(), off.to_dict()):
        (ev,) = session.receive(_frame("EVENT", "s1", payload))
        assert isinstance(ev, EventReceived) and ev.sub_id == "s1"
        verdicts.append(sub.admit(ev.event, counting))
    assert verdicts == [Admit.INVALID, Admit.DELIVER, Admit.DUPLICATE, Admit.UNMATCHED]
    # the forged copy (same id) and the real one were checked; the duplicate was dropped unchecked
    assert checked == [good.id, good.id, off.id]
    assert sub.last_seen == good.created_at


def test_a_forged_copy_does_not_shadow_the_real_event():
    keys = Keys.generate()
    event = Event.build(keys, 1, "real")
    sub = SubscriptionState("s1", [Filter.of(ids=[event.id])])
    forged = Event.from_dict({**event.to_dict(), "sig": "00" * 64})
    verify = Verifier()
    assert sub.admit(forged, verify) is Admit.INVALID
    assert sub.admit(event, verify) is Admit.DELIVER


def test_resubscribe_uses_since_of_the_newest_event_and_drops_the_limit():
    keys = Keys.generate()
    sub = SubscriptionState("s1", [Filter.of(kinds=[1], limit=5, since=100)])
    session = _session(None, sub)
    session.req(sub)
    event = Event.build(keys, 1, "x", created_at=1_700_000_000)
    assert sub.admit(event, Verifier()) is Admit.DELIVER
    assert sub.resubscribe_since() == 1_700_000_000
    session.connection_lost()
    assert sub.eose_done  # a lost relay owes no EOSE
    session.connection_made()
    again = json.loads(session.req(sub))
    assert again == ["REQ", "s1", {"kinds": [1], "since": 1_700_000_000}]
    # a relay that never had the REQ gets the original filters
    other = RelaySession(OTHER, None, {"s1": sub})
    other.connection_made()
    assert json.loads(other.req(sub))[2] == {"kinds": [1], "since": 100, "limit": 5}


def test_ok_replies_carry_the_prefix():
    session = _session()
    (ev,) = session.receive(_frame("OK", "ab" * 32, False, "blocked: not on the list"))
    assert isinstance(ev, OkReceived) and ev.event_id == "ab" * 32
    assert (ev.reply.accepted, ev.reply.prefix) == (False, "blocked")
    (ev,) = session.receive(_frame("OK", "cd" * 32, True, ""))
    assert ev.reply.accepted and ev.reply.prefix == ""


def test_closed_by_the_only_relay_ends_the_subscription_with_its_reason():
    sub = SubscriptionState("s1", [Filter.of(kinds=[1])])
    session = _session(None, sub)
    session.req(sub)
    assert session.receive(_frame("CLOSED", "s1", "blocked: go away")) == [ClosedByRelay("s1", "blocked: go away")]
    error = sub.closed_by_relay(URL, "blocked: go away", serving=[URL])
    assert error is not None and error.reasons == {URL: "blocked: go away"} and sub.closed
    assert session.req(sub) is None  # never sent again


def test_closed_by_one_relay_of_two_keeps_the_subscription():
    sub = SubscriptionState("s1", [Filter.of(kinds=[1])])
    sub.req_sent(URL)
    sub.req_sent(OTHER)
    assert sub.closed_by_relay(URL, "rate-limited:", serving=[URL, OTHER]) is None
    assert not sub.closed and not sub.eose_done  # OTHER still owes EOSE


def test_auth_challenge_is_answered_and_an_auth_required_req_is_resent():
    keys = Keys.generate()
    sub = SubscriptionState("s1", [Filter.of(kinds=[4])])
    session = _session(keys, sub)
    session.req(sub)
    # the relay refuses the REQ until we authenticate: no error for the reader, no frame yet
    assert session.receive(_frame("CLOSED", "s1", "auth-required: sign in")) == []
    assert session.data_to_send() == []
    assert not sub.eose_done  # still waiting for this relay
    assert session.receive(_frame("AUTH", "challenge-1")) == [AuthChallenged("challenge-1")]
    (auth_frame,) = session.data_to_send()
    kind, payload = json.loads(auth_frame)
    auth = Event.from_dict(payload)
    auth.verify()
    assert kind == "AUTH" and auth.kind == KIND_CLIENT_AUTH and auth.pubkey == keys.public_key
    assert ["challenge", "challenge-1"] in auth.tags and ["relay", URL] in auth.tags
    assert session.auth is AuthState.PENDING
    events = session.receive(_frame("OK", auth.id, True, ""))
    assert events == [AuthFinished(True, ""), ReqSent("s1")]
    (req,) = session.data_to_send()
    assert json.loads(req)[:2] == ["REQ", "s1"]
    # a second auth-required for the same subscription is final
    assert session.receive(_frame("CLOSED", "s1", "auth-required: still no")) == [
        ClosedByRelay("s1", "auth-required: still no")]


def test_refused_auth_closes_the_waiting_subscription():
    keys = Keys.generate()
    sub = SubscriptionState("s1", [Filter.of(kinds=[4])])
    session = _session(keys, sub)
    session.req(sub)
    session.receive(_frame("AUTH", "c"))
    (auth_frame,) = session.data_to_send()
    session.receive(_frame("CLOSED", "s1", "auth-required: sign in"))
    auth_id = json.loads(auth_frame)[1]["id"]
    events = session.receive(_frame("OK", auth_id, False, "restricted: not you"))
    assert events == [AuthFinished(False, "restricted: not you"),
                      ClosedByRelay("s1", "auth-required: authentication failed")]


def test_without_keys_auth_required_is_final_and_challenges_are_not_answered():
    sub = SubscriptionState("s1", [Filter.of(kinds=[4])])
    session = _session(None, sub)
    session.req(sub)
    assert session.receive(_frame("AUTH", "c")) == [AuthChallenged("c")]
    assert session.data_to_send() == [] and session.start_auth() is None
    assert session.receive(_frame("CLOSED", "s1", "auth-required: x")) == [ClosedByRelay("s1", "auth-required: x")]


def test_count_answer_and_refusal():
    session = _session()
    frame = session.count("c1", [Filter.of(kinds=[1])])
    assert json.loads(frame) == ["COUNT", "c1", {"kinds": [1]}]
    assert session.receive(_frame("COUNT", "c1", {"count": 7})) == [CountReceived("c1", 7)]
    session.count("c2", [Filter.of(kinds=[1])])
    assert session.receive(_frame("CLOSED", "c2", "unsupported: no COUNT")) == [CountRefused("c2", "unsupported: no COUNT")]
    assert session.receive(_frame("COUNT", "unknown", {"count": 1})) == []


def test_close_frames_only_for_carried_subscriptions():
    sub = SubscriptionState("s1", [Filter.of(kinds=[1])])
    session = _session(None, sub)
    assert session.close("s1") is None
    session.req(sub)
    assert json.loads(session.close("s1")) == ["CLOSE", "s1"]
    assert session.close("s1") is None


@pytest.mark.parametrize("frame", ["not json", "[]", '["EVENT"]', '["OK", 1, 2, 3]', '{"a": 1}', '["WHAT", 1]'])
def test_malformed_frames_become_one_event(frame: str):
    (ev,) = _session().receive(frame)
    assert isinstance(ev, FrameMalformed) and ev.error


def test_notice():
    assert _session().receive(_frame("NOTICE", "hello")) == [NoticeReceived("hello")]


def test_a_new_connection_forgets_reqs_and_auth():
    keys = Keys.generate()
    sub = SubscriptionState("s1", [Filter.of(kinds=[1])])
    session = _session(keys, sub)
    session.req(sub)
    session.receive(_frame("AUTH", "c"))
    assert session.auth is AuthState.PENDING
    session.connection_lost()
    session.connection_made()
    assert session.auth is AuthState.NONE and session.challenge is None
    assert session.req(sub) is not None


def test_backoff_grows_with_jitter_and_is_capped():
    for failures in range(1, 12):
        nominal = min(4.0, 0.25 * 2 ** (failures - 1))
        delays = {backoff_delay(failures, 4.0) for _ in range(20)}
        assert all(nominal / 2 <= d <= nominal for d in delays) and len(delays) > 1


def test_resubscribe_since_is_never_in_the_future():
    """Cursor poisoning: an event dated ahead of now (relays accept up to +15 min) must not
    move the resubscribe `since` past now (issue 16)."""
    from pylon.relay.session import SubscriptionState

    sub = SubscriptionState("poison", [Filter.of(kinds=[1])])
    now = 1_800_000_000
    sub.last_seen = now + 900  # as admit() records for a future-dated event
    assert sub.resubscribe_since(now=now) == now
    sub.last_seen = now - 5
    assert sub.resubscribe_since(now=now) == now - 5
    sub.last_seen = None
    assert sub.resubscribe_since(now=now) is None
