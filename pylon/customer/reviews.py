"""Signed reviews of providers (NIP-32 labels, kind 1985), published on request, read only
from keys the user trusts.

A local scoreboard (pylon.customer.scoreboard) only knows this client's own jobs. Reviews let
people share that evidence without creating a new trust problem: anyone can publish labels,
so a reader counts only reviews signed by keys in its `trusted_reviewers` list (config key),
never "everyone's".

One review per (job, provider):

    {"kind": 1985, "content": "{\"first_reply_s\": 0.03, \"paid_msat\": 2000}",
     "tags": [["L", "pylon/review"], ["l", "<outcome>", "pylon/review"], ["p", <provider>],
              ["e", <job id>], ["e", <result id>]?, ["e", <fraud report id>, "", "mention"]?,
              ["alt", "Pylon review of a NIP-90 provider"]]}

where outcome is delivered | failed | stalled | paid_not_delivered. A fraud report
(pylon.jobs.keyed) is attached by id when there is one.
"""

from __future__ import annotations

import json
from typing import Any, Final, Iterable

from pylon.customer.scoreboard import OUTCOMES, ProviderScore
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys, normalize_pubkey

KIND_LABEL: Final = 1985
NAMESPACE: Final = "pylon/review"


def build_review(keys: Keys, provider: str, outcome: str, *, job_id: str, result_id: str | None = None,
                 fraud_report_id: str | None = None, details: dict[str, Any] | None = None) -> Event:
    """Sign one review (see the module docstring)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    tags = [["L", NAMESPACE], ["l", outcome, NAMESPACE], ["p", provider], ["e", job_id]]
    if result_id:
        tags.append(["e", result_id])
    if fraud_report_id:
        tags.append(["e", fraud_report_id, "", "mention"])
    tags.append(["alt", "Pylon review of a NIP-90 provider"])
    content = json.dumps({k: v for k, v in (details or {}).items() if v is not None}, separators=(",", ":"))
    return Event.build(keys, KIND_LABEL, content, tags)


def tally(events: Iterable[Event], trusted: Iterable[str]) -> dict[str, ProviderScore]:
    """Per-provider counts from reviews signed by trusted keys only (one per reviewer and job)."""
    allowed = {normalize_pubkey(k) for k in trusted}
    seen: set[tuple[str, str, str]] = set()
    board: dict[str, ProviderScore] = {}
    for ev in events:
        if ev.kind != KIND_LABEL or ev.pubkey not in allowed or NAMESPACE not in ev.tag_values("L"):
            continue
        label = next((t[1] for t in ev.tags if len(t) >= 3 and t[0] == "l" and t[2] == NAMESPACE), None)
        provider, job = ev.first_tag("p"), ev.first_tag("e")
        if label not in OUTCOMES or not provider or len(provider) < 2 or not job or len(job) < 2:
            continue
        key = (ev.pubkey, provider[1], job[1])
        if key in seen:
            continue
        seen.add(key)
        s = board.setdefault(provider[1], ProviderScore(provider[1]))
        setattr(s, label, getattr(s, label) + 1)
    return board


async def read_reviews(pool: Any, trusted: Iterable[str], *, timeout: float = 5.0) -> dict[str, ProviderScore]:
    """Reviews from the trusted keys on the pool's relays, tallied per provider."""
    authors = [normalize_pubkey(k) for k in trusted]
    if not authors:
        return {}
    events = await pool.query([Filter.of(kinds=[KIND_LABEL], authors=authors, L=[NAMESPACE])], timeout=timeout)
    return tally(events, authors)
