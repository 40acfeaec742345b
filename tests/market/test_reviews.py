"""Signed reviews (issue 10, rule 4, optional part): a client that publishes reviews leaves one
NIP-32 label per provider after a job; `pylon providers` counts only reviews signed by keys in
`trusted_reviewers`. Real provider, real relay, real `pylon providers` process."""

from __future__ import annotations

import json

import pytest

from pylon.customer.client import PylonClient
from pylon.customer.reviews import KIND_LABEL, NAMESPACE, build_review, read_reviews
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.e2e.helpers import serving
from tests.e2e.test_cli_jobs import _pylon

pytestmark = pytest.mark.timeout(60)


async def test_reviews_are_published_and_read_only_from_trusted_keys(relay_url, openai_double, tmp_path):
    reviewer, stranger = Keys.generate(), Keys.generate()
    async with serving(relay_url, openai_double.base_url, tmp_path / "p.sqlite", free=True) as provider:
        async with PylonClient([relay_url], keys=reviewer, publish_reviews=True) as client:
            outcome = await client.ask("review me", timeout=20)
        async with RelayPool([relay_url]) as pool:
            (review,) = await pool.query([Filter.of(kinds=[KIND_LABEL], authors=[reviewer.public_key])], timeout=5)
            assert ["l", "delivered", NAMESPACE] in review.tags and ["p", provider.pubkey] in review.tags
            assert ["e", outcome.job_id] in review.tags and ["e", outcome.result_event_id] in review.tags
            # a stranger's flood of bad reviews counts for nothing unless trusted
            for i in range(3):
                await pool.publish(build_review(stranger, provider.pubkey, "paid_not_delivered", job_id=f"{i:064x}"))
            trusted_only = await read_reviews(pool, [reviewer.npub])
            assert trusted_only[provider.pubkey].delivered == 1 and trusted_only[provider.pubkey].jobs == 1
        home = tmp_path / "c"
        home.mkdir()
        (home / "config.toml").write_text(f'trusted_reviewers = ["{reviewer.npub}"]\n')
        code, out, err = await _pylon("providers", "--relay", relay_url, "--json", home=home)
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["pubkey"] == provider.pubkey]
    assert row["reviews"]["delivered"] == 1 and row["reviews"]["paid_not_delivered"] == 0
