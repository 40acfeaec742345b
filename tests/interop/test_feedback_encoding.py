"""Encrypted feedback is emitted in the form both Pylon and nostrdvm read (docs/PROTOCOL.md,
"Interop with nostrdvm"): status/amount in clear AND the same tags sealed in the content as a
JSON tag array with the text in a ["content", text] tag; both forms, and older Pylon's bare
encrypted text, parse."""

from __future__ import annotations

import json

from pylon.jobs.nip90 import JobFeedback, JobRequest
from pylon.nostr.crypto import decrypt_from, encrypt_to
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys


def _encrypted_request(customer: Keys, provider: Keys) -> JobRequest:
    event = JobRequest.from_prompt("hi", providers=[provider.public_key]).to_event(customer, encrypted=True)
    return JobRequest.from_event(event, provider)


def test_encrypted_feedback_carries_clear_and_sealed_tags():
    customer, provider = Keys.generate(), Keys.generate()
    request = _encrypted_request(customer, provider)
    event = JobFeedback.build(provider, request, "payment-required", amount_msat=21_000, bolt11="lnbcrt210n1x",
                              content="pay please")
    assert event.first_tag("status") == ["status", "payment-required"]
    assert event.first_tag("amount") == ["amount", "21000", "lnbcrt210n1x"]
    sealed = json.loads(decrypt_from(customer, provider.public_key, event.content))  # what nostrdvm's bot reads
    assert ["status", "payment-required"] in sealed and ["content", "pay please"] in sealed
    assert ["amount", "21000", "lnbcrt210n1x"] in sealed
    parsed = JobFeedback.from_event(event, customer)
    assert (parsed.status, parsed.content, parsed.amount_msat, parsed.bolt11) == \
        ("payment-required", "pay please", 21_000, "lnbcrt210n1x")


def test_older_bare_encrypted_text_still_parses():
    customer, provider = Keys.generate(), Keys.generate()
    request = _encrypted_request(customer, provider)
    tags = [["status", "partial"], ["e", request.id], ["p", customer.public_key], ["encrypted"]]
    for text in ("plain partial text", '[["status", "error"]]'):  # a tag array whose status differs is text
        event = Event.build(provider, 7000, encrypt_to(provider, customer.public_key, text), tags)
        parsed = JobFeedback.from_event(event, customer)
        assert (parsed.status, parsed.content) == ("partial", text)
