"""The documented ranges of a job's generation parameters, checked before anything is sent.

Why on the customer's side: a value no backend accepts (`temperature=9`) would otherwise be
signed, published, quoted, maybe paid for, and only then refused by a provider's backend.
The ranges are the OpenAI API's (which vLLM, llama.cpp, Ollama and SGLang follow); a
provider still reads requests leniently (pylon.jobs.nip90), since other clients exist.

    max_tokens          integer >= 1
    temperature         0 .. 2
    top_p               0 < top_p <= 1
    top_k               integer >= -1 (-1: off)
    frequency_penalty   -2 .. 2
    seed                integer
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from pylon.errors import ConfigError

# name -> (low, high, low inclusive); None means unbounded on that side
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "max_tokens": (1, None, True),
    "temperature": (0.0, 2.0, True),
    "top_p": (0.0, 1.0, False),
    "top_k": (-1, None, True),
    "frequency_penalty": (-2.0, 2.0, True),
    "seed": (None, None, True),
}
INTEGERS = {"max_tokens", "top_k", "seed"}


def describe(name: str) -> str:
    """The documented range of `name` in words, e.g. "between 0 and 2"."""
    low, high, inclusive = RANGES[name]
    kind = "an integer " if name in INTEGERS else ""
    if low is not None and high is not None:
        return f"{kind}between {low:g} and {high:g}" + ("" if inclusive else f" (above {low:g})")
    if low is not None:
        return f"{kind}of at least {low:g}"
    return kind.strip() or "a number"


def check_params(params: Mapping[str, Any]) -> None:
    """Raise ConfigError (one line naming the parameter and its range) for any value set
    outside its documented range; None values are unset and pass."""
    for name, value in params.items():
        if value is None or name not in RANGES:
            continue
        low, high, inclusive = RANGES[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and name in INTEGERS:
            ok = isinstance(value, int) or float(value).is_integer()
        if ok:
            number = float(value)
            ok = math.isfinite(number)
            if ok and low is not None:
                ok = number >= low if inclusive else number > low
            if ok and high is not None:
                ok = number <= high
        if not ok:
            raise ConfigError(f"{name} must be {describe(name)}, got {value!r}",
                              hint="nothing was sent; fix the value and ask again")
