"""NIP-90 kind-5050 requests, feedback, results and cancellations: round trips and bad input."""

from __future__ import annotations

import json

import pytest

from pylon.jobs.nip90 import (
    KIND_FEEDBACK, KIND_REQUEST, KIND_RESULT, JobFeedback, JobParseError, JobRequest, JobResult,
    build_cancellation, normalize_messages, parse_cancellation, parse_float, parse_int, transcript,
)
from pylon.nostr import nip04
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

CUSTOMER = Keys.generate()
PROVIDER = Keys.generate()
OTHER = Keys.generate()


def _raw(tags, content="", keys=CUSTOMER, kind=KIND_REQUEST) -> Event:
    return Event.build(keys, kind, content, tags)


# -- requests ---------------------------------------------------------------------------

def test_plain_prompt_round_trip_with_every_param():
    req = JobRequest.from_prompt(
        "what is the capital of France?", model="tiny", max_tokens=64, temperature=0.5, top_p=0.9,
        top_k=40, frequency_penalty=1.0, seed=7, stop=["\n\n"], output="text/plain", bid_msat=5000,
        relays=["ws://127.0.0.1:1"], providers=[PROVIDER.public_key],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    )
    event = req.to_event(CUSTOMER)
    assert event.kind == KIND_REQUEST and event.is_valid()
    assert ["i", "what is the capital of France?", "text"] in event.tags
    assert not any(t[0] == "param" and t[1] == "messages" for t in event.tags)  # plain prompt stays plain
    back = JobRequest.from_event(event)
    assert back.messages == [{"role": "user", "content": "what is the capital of France?"}]
    assert (back.model, back.max_tokens, back.temperature, back.top_p, back.top_k) == ("tiny", 64, 0.5, 0.9, 40)
    assert (back.frequency_penalty, back.seed, back.stop) == (1.0, 7, ["\n\n"])
    assert back.response_format == req.response_format
    assert (back.output, back.bid_msat, back.relays) == ("text/plain", 5000, ["ws://127.0.0.1:1"])
    assert back.providers == [PROVIDER.public_key]
    assert (back.id, back.customer, back.created_at) == (event.id, CUSTOMER.public_key, event.created_at)
    assert back.addressed_to(PROVIDER.public_key) and not back.addressed_to(OTHER.public_key)
    assert not back.encrypted


def test_spec_example_spellings_prompt_type_and_dashed_params():
    # the data-vending-machines kind 5050 example, verbatim
    event = _raw([
        ["i", "what is the capital of France? ", "prompt"],
        ["param", "model", "LLaMA-2"], ["param", "max_tokens", "512"], ["param", "temperature", "0.5"],
        ["param", "top-k", "50"], ["param", "top-p", "0.7"], ["param", "frequency_penalty", "1"],
    ])
    req = JobRequest.from_event(event)
    assert req.messages == [{"role": "user", "content": "what is the capital of France? "}]
    assert (req.model, req.max_tokens, req.temperature, req.top_k, req.top_p, req.frequency_penalty) == (
        "LLaMA-2", 512, 0.5, 50, 0.7, 1.0)
    assert req.addressed_to(OTHER.public_key)  # no p tag: open to everybody


def test_chat_messages_survive_unflattened_and_others_see_a_transcript():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    event = JobRequest.from_prompt(messages, model="m").to_event(CUSTOMER)
    i_tags = [t for t in event.tags if t[0] == "i"]
    assert len(i_tags) == 1 and "System: You are terse." in i_tags[0][1] and i_tags[0][2] == "text"
    assert JobRequest.from_event(event).messages == messages


def test_chat_messages_with_the_i_marker_form():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    event = _raw([["i", json.dumps(messages), "text", "", "messages"]])
    assert JobRequest.from_event(event).messages == messages


def test_several_text_inputs_are_joined():
    event = _raw([["i", "first", "text"], ["i", "second"]])
    assert JobRequest.from_event(event).messages[0]["content"] == "first\n\nsecond"


def test_openai_content_parts_are_reduced_to_text():
    msgs = normalize_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert msgs == [{"role": "user", "content": "ab"}]
    assert transcript(msgs) == "ab"


def test_lenient_numbers():
    assert parse_int("100_000", "bid") == 100000
    assert parse_int(" 1,000 ", "bid") == 1000
    assert parse_int("12.0", "x") == 12
    assert parse_float(" 0.5 ", "t") == 0.5
    event = _raw([["i", "x", "text"], ["bid", "100_000"], ["param", "max_tokens", " 32 "]])
    req = JobRequest.from_event(event)
    assert (req.bid_msat, req.max_tokens) == (100000, 32)


@pytest.mark.parametrize("tags, fragment", [
    ([], "no text input"),
    ([["i"]], "no data"),
    ([["i", "   ", "text"]], "empty"),
    ([["i", "https://x", "url"]], "not supported"),
    ([["i", "x", "banana"]], "unknown input type"),
    ([["i", "x", "text"], ["param", "max_tokens"]], "has no value"),
    ([["i", "x", "text"], ["param", "max_tokens", "lots"]], "max_tokens must be an integer"),
    ([["i", "x", "text"], ["param", "max_tokens", "0"]], "max_tokens must be >= 1"),
    ([["i", "x", "text"], ["param", "temperature", "nan"]], "finite"),
    ([["i", "x", "text"], ["param", "top_p", "1.5"]], "top_p must be <= 1.0"),
    ([["i", "x", "text"], ["param", "top-k", "-3"]], "top_k must be >= 0"),
    ([["i", "x", "text"], ["bid", "-5"]], "bid must be >= 0"),
    ([["i", "x", "text"], ["bid", "12.5"]], "bid must be an integer"),
    ([["i", "x", "text"], ["param", "response_format", "{nope"]], "response_format is not valid JSON"),
    ([["i", "x", "text"], ["param", "response_format", "[1]"]], "must be a JSON object"),
    ([["i", "x", "text"], ["param", "messages", "[]"]], "non-empty"),
    ([["i", "x", "text"], ["param", "messages", '[{"role":"wizard","content":"x"}]']], "unknown role"),
    ([["i", "x", "text"], ["param", "messages", '[{"role":"user","content":5}]']], "content must be a string"),
    ([["i", "{", "text", "", "messages"]], "not valid JSON"),
    ([["i", "x", "text"], ["param", "stop", "[1,2]"]], "stop must be"),
])
def test_malformed_requests_give_a_clear_parse_error(tags, fragment):
    with pytest.raises(JobParseError) as info:
        JobRequest.from_event(_raw(tags))
    assert fragment in str(info.value)


def test_wrong_kind_and_junk_p_tags():
    with pytest.raises(JobParseError, match="not a kind-5050"):
        JobRequest.from_event(_raw([["i", "x"]], kind=1))
    req = JobRequest.from_event(_raw([["i", "x"], ["p", "zz"], ["p", PROVIDER.public_key]]))
    assert req.providers == [PROVIDER.public_key]


def test_unknown_params_are_kept():
    req = JobRequest.from_event(_raw([["i", "x"], ["param", "repetition_penalty", "1.1"]]))
    assert req.extra_params == {"repetition_penalty": "1.1"}
    assert ["param", "repetition_penalty", "1.1"] in JobRequest.from_event(req.to_event(CUSTOMER)).to_event(CUSTOMER).tags


# -- encryption -------------------------------------------------------------------------

def test_encrypted_request_hides_inputs_and_params():
    req = JobRequest.from_prompt("secret prompt", model="tiny", max_tokens=9, providers=[PROVIDER.npub], bid_msat=10)
    event = req.to_event(CUSTOMER, encrypted=True)
    assert ["encrypted"] in event.tags and ["p", PROVIDER.public_key] in event.tags
    assert not any(t[0] in ("i", "param") for t in event.tags)
    assert "secret" not in event.to_json() and "tiny" not in event.to_json()
    assert ["bid", "10"] in event.tags
    back = JobRequest.from_event(event, PROVIDER)
    assert back.encrypted and back.prompt_text == "secret prompt" and (back.model, back.max_tokens) == ("tiny", 9)
    with pytest.raises(JobParseError, match="another provider"):
        JobRequest.from_event(event, OTHER)
    with pytest.raises(JobParseError, match="no key"):
        JobRequest.from_event(event)


def test_encrypted_request_needs_exactly_one_provider():
    with pytest.raises(JobParseError, match="exactly one provider"):
        JobRequest.from_prompt("x").to_event(CUSTOMER, encrypted=True)


def test_encrypted_request_with_nip04_content_is_decrypted():
    private = [["i", "nip04 prompt", "text"], ["param", "model", "m"]]
    content = nip04.encrypt(CUSTOMER, PROVIDER.public_key, json.dumps(private))
    event = _raw([["p", PROVIDER.public_key], ["encrypted"]], content)
    req = JobRequest.from_event(event, PROVIDER)
    assert req.prompt_text == "nip04 prompt" and req.model == "m"


@pytest.mark.parametrize("content, fragment", [
    ("", "empty content"),
    ("AgAAAA==", "could not decrypt"),
])
def test_encrypted_request_garbage(content, fragment):
    event = _raw([["p", PROVIDER.public_key], ["encrypted"]], content)
    with pytest.raises(JobParseError, match=fragment):
        JobRequest.from_event(event, PROVIDER)


def test_encrypted_request_decrypting_to_non_tags():
    from pylon.nostr.crypto import encrypt_to

    event = _raw([["p", PROVIDER.public_key], ["encrypted"]], encrypt_to(CUSTOMER, PROVIDER.public_key, '{"a":1}'))
    with pytest.raises(JobParseError, match="JSON array of tags"):
        JobRequest.from_event(event, PROVIDER)


# -- feedback and results -----------------------------------------------------------------

def _received(prompt="hello", encrypted=False) -> JobRequest:
    req = JobRequest.from_prompt(prompt, providers=[PROVIDER.public_key] if encrypted else [])
    event = req.to_event(CUSTOMER, encrypted=encrypted)
    return JobRequest.from_event(event, PROVIDER)


@pytest.mark.parametrize("status", ["payment-required", "processing", "error", "success", "partial"])
def test_feedback_round_trip(status):
    req = _received()
    event = JobFeedback.build(PROVIDER, req, status, extra="why", content="so far", amount_msat=1000,
                              bolt11="lnbcrt10n1xyz", offset=3)
    assert event.kind == KIND_FEEDBACK and event.is_valid()
    fb = JobFeedback.from_event(event)
    assert (fb.status, fb.extra, fb.content, fb.amount_msat, fb.bolt11, fb.offset) == (
        status, "why", "so far", 1000, "lnbcrt10n1xyz", 3)
    assert (fb.request_id, fb.customer, fb.provider) == (req.id, CUSTOMER.public_key, PROVIDER.public_key)


def test_result_round_trip_with_usage_and_amount():
    req = _received("the prompt")
    event = JobResult.build(PROVIDER, req, "the answer", model="tiny", prompt_tokens=5, completion_tokens=7,
                            amount_msat=2000, bolt11="lnbcrt20n1abc")
    assert event.kind == KIND_RESULT and event.is_valid()
    assert ["usage", "5", "7"] in event.tags and ["amount", "2000", "lnbcrt20n1abc"] in event.tags
    res = JobResult.from_event(event)
    assert (res.text, res.model, res.prompt_tokens, res.completion_tokens, res.total_tokens) == (
        "the answer", "tiny", 5, 7, 12)
    assert (res.amount_msat, res.bolt11, res.request_id, res.customer) == (2000, "lnbcrt20n1abc", req.id, CUSTOMER.public_key)
    assert Event.from_json(res.request_json).id == req.id


def test_result_leaves_out_a_huge_request_tag():
    req = _received("x" * 20000)
    event = JobResult.build(PROVIDER, req, "ok")
    assert not any(t[0] == "request" for t in event.tags)


def test_encrypted_feedback_and_result_are_unreadable_to_others():
    req = _received("private prompt", encrypted=True)
    fb_event = JobFeedback.build(PROVIDER, req, "partial", content="private partial", offset=0)
    res_event = JobResult.build(PROVIDER, req, "private answer", prompt_tokens=1, completion_tokens=2)
    for event in (fb_event, res_event):
        assert ["encrypted"] in event.tags
        assert "private" not in event.content
    assert JobFeedback.from_event(fb_event, CUSTOMER).content == "private partial"
    assert JobResult.from_event(res_event, CUSTOMER).text == "private answer"
    with pytest.raises(JobParseError, match="could not decrypt"):
        JobResult.from_event(res_event, OTHER)
    with pytest.raises(JobParseError, match="no key"):
        JobResult.from_event(res_event)


def test_nip04_encrypted_reply_is_decrypted():
    req = _received()
    content = nip04.encrypt(PROVIDER, CUSTOMER.public_key, "old style answer")
    event = Event.build(PROVIDER, KIND_RESULT, content, [["e", req.id], ["p", CUSTOMER.public_key], ["encrypted"]])
    assert JobResult.from_event(event, CUSTOMER).text == "old style answer"


@pytest.mark.parametrize("kind, tags, fragment", [
    (KIND_FEEDBACK, [["e", "a" * 64]], "no status"),
    (KIND_FEEDBACK, [["status", "dancing"], ["e", "a" * 64]], "unknown status"),
    (KIND_FEEDBACK, [["status", "processing"]], "no valid ['e'"),
    (KIND_FEEDBACK, [["status", "processing"], ["e", "short"]], "no valid ['e'"),
    (KIND_FEEDBACK, [["status", "processing"], ["e", "a" * 64], ["amount", "lots"]], "amount must be an integer"),
    (KIND_FEEDBACK, [["status", "partial"], ["e", "a" * 64], ["offset", "-1"]], "offset must be >= 0"),
    (KIND_RESULT, [["e", "a" * 64], ["usage", "5"]], "usage tag"),
    (KIND_RESULT, [["e", "a" * 64], ["usage", "x", "y"]], "must be an integer"),
    (KIND_RESULT, [["e", "a" * 64], ["p", "nothex"]], "not a valid public key"),
    (KIND_RESULT, [], "no valid ['e'"),
])
def test_malformed_replies(kind, tags, fragment):
    event = Event.build(PROVIDER, kind, "", tags)
    parse = JobFeedback.from_event if kind == KIND_FEEDBACK else JobResult.from_event
    with pytest.raises(JobParseError) as info:
        parse(event)
    assert fragment in str(info.value)


def test_amount_with_underscores_in_feedback():
    event = Event.build(PROVIDER, KIND_FEEDBACK, "", [["status", "payment-required"], ["e", "b" * 64],
                                                      ["amount", "100_000", "lnbc1"]])
    assert JobFeedback.from_event(event).amount_msat == 100000


# -- cancellation -------------------------------------------------------------------------

def test_cancellation_round_trip():
    req = _received()
    event = build_cancellation(CUSTOMER, [req.id])
    assert event.kind == 5 and ["k", "5050"] in event.tags and ["e", req.id] in event.tags
    assert parse_cancellation(event) == [req.id]


def test_deletions_of_other_kinds_are_not_cancellations():
    event = Event.build(CUSTOMER, 5, "", [["e", "c" * 64], ["k", "1"]])
    assert parse_cancellation(event) == []
    assert parse_cancellation(Event.build(CUSTOMER, 5, "", [["e", "c" * 64]])) == ["c" * 64]
    assert parse_cancellation(Event.build(CUSTOMER, 1, "", [["e", "c" * 64]])) == []
    with pytest.raises(ValueError):
        build_cancellation(CUSTOMER, [])


# -- fuzz: nothing but JobParseError ever escapes a parse -----------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

_tag_text = st.one_of(st.sampled_from(["i", "param", "bid", "p", "e", "status", "amount", "usage", "offset",
                                       "encrypted", "text", "prompt", "messages", "model", "max_tokens",
                                       "top-k", "response_format", "stop", "", "[", "{}", "1e999", "-1"]),
                      st.text(max_size=12))
_tags = st.lists(st.lists(_tag_text, max_size=5), max_size=8)


@settings(max_examples=300, deadline=None)
@given(tags=_tags, content=st.text(max_size=30), kind=st.sampled_from([KIND_REQUEST, KIND_FEEDBACK, KIND_RESULT]))
def test_fuzzed_events_only_raise_job_parse_error(tags, content, kind):
    event = Event.build(CUSTOMER, kind, content, tags)
    parse = {KIND_REQUEST: JobRequest.from_event, KIND_FEEDBACK: JobFeedback.from_event,
             KIND_RESULT: JobResult.from_event}[kind]
    try:
        parse(event, PROVIDER)
    except JobParseError:
        pass
