"""PartialCoalescer (pylon.provider.partials): the first text at once, then coalesced by time
and size; offsets always reassemble the text exactly."""

from __future__ import annotations

import pytest

from pylon.provider.partials import PartialCoalescer


def test_first_text_goes_at_once_then_by_interval():
    c = PartialCoalescer(interval_s=0.05, max_chars=1000)
    assert c.push("Hel", 10.0) == ("Hel", 0)       # the first token: no waiting
    assert c.push("lo", 10.01) is None             # within the interval: held
    assert c.push(" wor", 10.02) is None
    assert c.push("ld", 10.06) == ("lo world", 3)  # interval passed: everything pending, in order
    assert c.push("", 11.0) is None                # empty deltas are no partials


def test_size_flushes_before_the_interval():
    c = PartialCoalescer(interval_s=10.0, max_chars=5)
    assert c.push("a", 0.0) == ("a", 0)
    assert c.push("bcd", 0.001) is None
    assert c.push("efg", 0.002) == ("bcdefg", 1)


def test_zero_interval_sends_every_delta_and_offsets_reassemble():
    c = PartialCoalescer(interval_s=0.0)
    text, out = "", []
    for i, tok in enumerate(["a ", "b ", "c"]):
        part = c.push(tok, float(i))
        out.append(part)
        text += tok
    assert [p[1] for p in out] == [0, 2, 4] and "".join(p[0] for p in out) == text


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        PartialCoalescer(interval_s=-1)
