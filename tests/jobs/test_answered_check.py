"""pylon.provider.answered batches its relay queries and serves a request when the relays
cannot say. The pool here is a double (QueriesDouble) for the batching and failure cases; the
real relay path is tests/e2e/test_jobs_double.py::
test_a_fresh_provider_does_not_run_again_what_another_already_answered."""

from __future__ import annotations

import asyncio
from typing import Sequence

from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.provider.answered import AnsweredCheck


class QueriesDouble:
    """Answers `query` from a fixed list of events (or raises), and records each call."""

    def __init__(self, events: list[Event], *, fail: bool = False) -> None:
        self.events = events
        self.fail = fail
        self.calls: list[list[Filter]] = []

    async def query(self, filters: Sequence[Filter], *, timeout: float = 5.0) -> list[Event]:
        self.calls.append(list(filters))
        if self.fail:
            raise ConnectionError("no relay connected")
        return [e for e in self.events if any(f.matches(e) for f in filters)]


def _request(keys: Keys, text: str) -> Event:
    return Event.build(keys, 5050, "", [["i", text, "text"]])


async def test_one_query_per_burst_and_only_results_for_the_request_count():
    customer, provider = Keys.generate(), Keys.generate()
    done, open_, other = (_request(customer, t) for t in ("done", "open", "other"))
    result = Event.build(provider, 6050, "answer", [["e", done.id], ["p", customer.public_key]])
    feedback = Event.build(provider, 7000, "", [["e", open_.id], ["status", "processing"]])
    pool = QueriesDouble([result, feedback])
    check = AnsweredCheck(pool)
    try:
        answers = await asyncio.gather(check.answered(done), check.answered(open_), check.answered(other),
                                       check.answered(done))
    finally:
        await check.close()
    assert answers == [True, False, False, True]
    assert len(pool.calls) == 1  # the four asks (one a duplicate) went out as one REQ
    assert pool.calls[0][0].to_dict()["kinds"] == [6050]


async def test_relays_that_cannot_answer_mean_serve_it():
    check = AnsweredCheck(QueriesDouble([], fail=True))
    try:
        assert await check.answered(_request(Keys.generate(), "q")) is False
    finally:
        await check.close()
