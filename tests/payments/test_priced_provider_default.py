"""An in-process Provider given a price charges unless told free=True, and refuses to start
without a wallet to invoice with (it used to default to free=True and serve priced jobs free).
The paid path itself runs in tests/dsrs/test_lm_money.py (priced fixture, no free= argument)."""

from __future__ import annotations

import pytest

from pylon.nostr.keys import Keys
from pylon.provider.backends.openai import OpenAIBackend
from pylon.provider.provider import Provider


def test_a_price_means_not_free(dev_ledger):
    backend = OpenAIBackend("http://127.0.0.1:9/v1")
    assert Provider(["ws://127.0.0.1:9"], backend, keys=Keys.generate()).free is True
    priced = Provider(["ws://127.0.0.1:9"], backend, keys=Keys.generate(), price_msat=1_000,
                      wallet=dev_ledger.wallet("provider"))
    assert priced.free is False and priced.announce is not None
    assert Provider(["ws://127.0.0.1:9"], backend, keys=Keys.generate(), price_msat=1_000, free=True).free is True
    with pytest.raises(ValueError, match="wallet="):
        Provider(["ws://127.0.0.1:9"], backend, keys=Keys.generate(), price_per_1k_tokens_msat=500)
