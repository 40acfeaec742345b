"""Choosing among offers: what an untargeted job does when several providers answer.

On an open market one job can get a free result, a free provider's `processing`, and several
paid quotes, in any order. Paying the first acceptable quote (what Pylon did before) pays in
runs where a free provider answers the same job a few milliseconds later. So an untargeted
job with a wallet collects offers for a short *decision window* that starts at the first
paid quote, then acts by one policy (`decide`):

1. a free result, or a free provider already processing, beats any paid quote: nothing is
   paid (the quotes are left, reason "a free provider is answering");
2. otherwise the quotes are ranked by the route (`cheapest`: price, then score; `fastest`:
   the provider's median time to first reply from the scoreboard, then price; `best`:
   score, then price) and the first one that passes every payment check is paid; a refused
   one is left with its reason and the next is tried; still at most one payment per job;
3. a quote arriving after the window, while nothing is paid and no free provider is working,
   is decided at once;
4. the window ends early once every live provider serving the model (the client's NIP-89
   view, pylon.customer.live, as last read; never waited for) has answered the job: nobody
   is left to wait for. Unknown or empty view: the full window. A provider that does not
   announce, or announced after the view was read (it is refreshed every 30 s), is not
   waited for then; at one paid ask at a time this took a paid job from ~330 ms to ~15 ms
   on a local relay (bench/hot_path.py --pay dev).

If the free provider then fails (error, or silence past the first-reply deadline), the
decision is taken again over the quotes still on the table.

Every offer and what became of it is kept (`Offer`) and listed in `AskOutcome.offers`
(`pylon ask --json`). Avoided providers (`--avoid NPUB`) are listed with that reason and never
paid or accepted. Targeted jobs (`--provider`) have one provider and no window.

Why the default window is 300 ms: on a local relay a free provider's `processing` follows
the request by a few ms, a paid provider's quote by an invoice round trip (dev wallet ~1 ms,
LNbits ~10-30 ms, NWC ~50-200 ms); across public relays both take 100-300 ms more. The window
starts at the first *quote*, so it only has to cover how much later a free provider's reply
can arrive than a paid one's. `bench/market.py` measures the added latency (it is paid only
by jobs that end up paid) and the fraction of paid asks with a free provider online.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Final, Iterable, Literal, Mapping

from pylon.customer.scoreboard import UNKNOWN_SCORE, ProviderScore

Route = Literal["cheapest", "fastest", "best"]
ROUTES: Final = ("cheapest", "fastest", "best")
DEFAULT_ROUTE: Final = "cheapest"
DEFAULT_DECISION_WINDOW_S: Final = 0.3

OfferKind = Literal["quote", "free", "result", "error"]


@dataclass(slots=True)
class Offer:
    """One provider's answer to a job, and whether it was taken and why."""

    provider: str
    kind: OfferKind
    amount_msat: int | None = None
    at_s: float = 0.0  # seconds since the ask started
    action: str = "pending"  # pending | taken | left
    reason: str = ""
    payload: Any = field(default=None, repr=False)  # the JobFeedback of a quote

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "kind": self.kind, "amount_msat": self.amount_msat,
                "at_s": round(self.at_s, 4), "action": self.action, "reason": self.reason}


def check_route(route: str) -> Route:
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; one of: {', '.join(ROUTES)}")
    return route  # type: ignore[return-value]


def rank(quotes: Iterable[Offer], route: str, scores: Mapping[str, ProviderScore]) -> list[Offer]:
    """The quotes in the order the route prefers them (deterministic: pubkey breaks last ties)."""
    check_route(route)

    def score(o: Offer) -> float:
        s = scores.get(o.provider)
        return s.score if s is not None else UNKNOWN_SCORE

    def first_reply(o: Offer) -> float:
        s = scores.get(o.provider)
        return s.first_reply_s if s is not None and s.first_reply_s is not None else float("inf")

    def price(o: Offer) -> int:
        return o.amount_msat or 0

    key: Callable[[Offer], tuple[Any, ...]]
    if route == "cheapest":
        key = lambda o: (price(o), -score(o), o.at_s, o.provider)  # noqa: E731
    elif route == "fastest":
        key = lambda o: (first_reply(o), price(o), -score(o), o.provider)  # noqa: E731
    else:
        key = lambda o: (-score(o), price(o), o.at_s, o.provider)  # noqa: E731
    return sorted(quotes, key=key)


@dataclass(slots=True)
class OfferBook:
    """The offers of one job: recorded as they arrive, decided by `pylon.customer.client`."""

    offers: list[Offer] = field(default_factory=list)
    free_working: set[str] = field(default_factory=set)  # free providers that said processing/partial
    quoted: set[str] = field(default_factory=set)  # providers that asked for money
    first_quote_s: float | None = None

    def add(self, offer: Offer) -> Offer:
        self.offers.append(offer)
        return offer

    def pending_quotes(self) -> list[Offer]:
        return [o for o in self.offers if o.kind == "quote" and o.action == "pending"]

    def leave_pending(self, reason: str) -> list[Offer]:
        """Leave every quote still pending, with `reason`; returns them."""
        left = self.pending_quotes()
        for o in left:
            o.action, o.reason = "left", reason
        return left

    def close(self, reason: str) -> list[dict[str, Any]]:
        """The job is over: whatever is still pending was left (`reason`); the list for --json."""
        for o in self.offers:
            if o.action == "pending":
                o.action, o.reason = "left", reason
        return self.to_list()

    def to_list(self) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self.offers]
