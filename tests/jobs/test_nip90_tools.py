"""Tools in the job wire format: the request's `tools`/`tool_choice` params and the result's
`tool_calls` tag, in clear and encrypted (the tag sealed like the content)."""

from __future__ import annotations

import pytest

from pylon.jobs.nip90 import JobParseError, JobRequest, JobResult
from pylon.nostr.keys import Keys

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]


@pytest.mark.parametrize("encrypted", [False, True])
def test_tools_and_tool_calls_round_trip(encrypted):
    customer, provider = Keys.generate(), Keys.generate()
    req = JobRequest.from_prompt("hi", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "f"}},
                                 providers=[provider.public_key] if encrypted else [])
    event = req.to_event(customer, encrypted=encrypted)
    if encrypted:
        assert "tools" not in event.content and all(t[0] != "param" for t in event.tags)
    parsed = JobRequest.from_event(event, provider)
    assert parsed.tools == TOOLS and parsed.tool_choice == {"type": "function", "function": {"name": "f"}}
    result_event = JobResult.build(provider, parsed, "", tool_calls=CALLS, finish_reason="tool_calls")
    if encrypted:
        assert '"function"' not in [t for t in result_event.tags if t[0] == "tool_calls"][0][1]
    result = JobResult.from_event(result_event, customer)
    assert result.tool_calls == CALLS and result.finish_reason == "tool_calls"


@pytest.mark.parametrize("tools", ['{"type":"function"}', "[]", '[{"type":"function","function":{}}]', "nope"])
def test_malformed_tools_are_refused(tools):
    customer = Keys.generate()
    req = JobRequest.from_prompt("hi")
    req.extra_params["tools"] = tools
    with pytest.raises(JobParseError):
        JobRequest.from_event(req.to_event(customer))


def test_tool_choice_strings():
    customer = Keys.generate()
    for choice in ("auto", "none", "required"):
        parsed = JobRequest.from_event(JobRequest.from_prompt("hi", tool_choice=choice).to_event(customer))
        assert parsed.tool_choice == choice
