"""Streaming when feedback and the result cross on the wire.

The provider publishes partials from a background task, so the last partial can reach
the relay after the result. The stream must not repeat text it already emitted.
(Found by tests/e2e/test_jobs_vllm.py::test_stream_matches_the_result: "…ThTh".)
"""

from __future__ import annotations

from pylon.customer.client import PylonClient
from pylon.nostr import Keys
from tests.payments.helpers import ScriptedProvider


async def test_late_partial_after_result_is_not_streamed_twice(relay_url):
    async with ScriptedProvider(relay_url, wallet=None) as provider:
        async def answer(req):
            await provider.feedback(req, "partial", content="Hello ", offset=0)
            await provider.result(req, "Hello world", prompt_tokens=2, completion_tokens=2)
            await provider.feedback(req, "partial", content="world", offset=6)  # arrives late

        provider.serve(answer)
        async with PylonClient([relay_url], keys=Keys.generate()) as client:
            # collect_s keeps the client listening after the winner, as when several providers race
            stream = client.stream("hi", encrypted=False, timeout=30, collect_s=2, collect_max=2)
            pieces = [piece async for piece in stream]
    assert "".join(pieces) == "Hello world" == stream.outcome.text
    assert pieces[0] == "Hello "
