"""Compact JSON for frames and event ids: orjson where it can, the standard library otherwise.

Every event is serialised at least twice on its way (its id, then its frame) and every frame
is parsed once per hop; with the standard library that was ~7 us per small event id and
~4 us per parse, a visible share of Pylon's CPU per job (bench/profile.py). orjson does the
same in ~0.35 us and ~1.7 us and its output is byte for byte what NIP-01 wants (no spaces,
UTF-8 not \\u escapes, the short escapes for control characters; checked against the standard
library on random text in tests/nostr/test_jsonwire.py).

What orjson refuses is handed to the standard library, so behaviour does not change: a lone
surrogate (json.loads takes "\\ud800"; the event layer then refuses it with its own reason),
nesting deeper than 1024 (json raises RecursionError, which callers already catch), integers
beyond 64 bits when serialising. One difference: orjson *parses* an integer beyond 64 bits as
a float; every integer field of NIP-01 (created_at, kind, since, until, limit) is refused
either way, as "must be an integer" instead of "out of range".
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_SEPARATORS = (",", ":")


def dumps_bytes(obj: Any) -> bytes:
    """UTF-8 compact JSON. A lone surrogate raises UnicodeEncodeError, as str.encode would."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return json.dumps(obj, separators=_SEPARATORS, ensure_ascii=False).encode("utf-8")


def dumps(obj: Any) -> str:
    """Compact JSON text (non-ASCII as itself). Text with a lone surrogate is still returned
    (as the standard library did): a frame builder never fails on it; an id computation
    (dumps_bytes) does."""
    try:
        return orjson.dumps(obj).decode("utf-8")
    except orjson.JSONEncodeError:
        return json.dumps(obj, separators=_SEPARATORS, ensure_ascii=False)


def loads(data: str | bytes) -> Any:
    """Parse JSON; raises ValueError (or RecursionError) for what is not JSON, like json.loads."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
