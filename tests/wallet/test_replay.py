"""wallet.replay.ReplayWindow: a request signed ahead of its arrival (allowed up to future_s)
is still refused after its id is forgotten, by age or past max_ids."""

from __future__ import annotations

from wallet.replay import ReplayWindow

NOW = 1_000_000.0


def test_a_request_dated_ahead_is_not_replayable_once_its_id_ages_out() -> None:
    w = ReplayWindow(window_s=600, future_s=600)
    ahead = int(NOW) + 600
    assert w.check("a", ahead, NOW) is None
    assert w.check("a", ahead, NOW + 601) == "too old" and len(w) == 0  # forgotten, still refused
    assert w.check("honest", int(NOW) + 602, NOW + 602) is None  # requests signed now still pass


def test_a_request_dated_ahead_is_not_replayable_once_evicted() -> None:
    w = ReplayWindow(window_s=600, max_ids=1, future_s=600)
    ahead = int(NOW) + 300
    assert w.check("a", ahead, NOW) is None
    assert w.check("b", int(NOW), NOW) is None  # evicts 'a'
    assert w.check("a", ahead, NOW + 1) == "too old"
