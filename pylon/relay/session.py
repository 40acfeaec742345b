"""The relay protocol without I/O (websockets-style): frames in -> events, frames out.

`RelaySession` is the NIP-01/42/45 state of one client's link to one relay: which REQs this
connection carries, which COUNTs are pending, the AUTH challenge and whether we answered
it, and which subscriptions wait for authentication before their REQ is sent again. It
never touches a socket or the event loop: the runner (pylon.relay.runner) feeds it every
frame it reads (`receive`), sends what it returns or queues (`data_to_send`), and turns the
`SessionEvent`s into futures, queue puts and log lines. The protocol tests drive it with
strings alone (tests/pool/test_session.py).

`SubscriptionState` is the protocol state of one subscription across every relay of a pool:
its filters, the relays that got its REQ and have not sent EOSE, who CLOSED it, the ids
delivered (dedupe) and the newest `created_at` seen — from which a resubscribe computes its
`since` in exactly one place, `SubscriptionState.resubscribe_since`.

`Verifier` checks ids and signatures once per (id, sig), shared by a pool's subscriptions.
"""

from __future__ import annotations

import enum
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Sequence

from pylon.errors import RelayError
from pylon.nostr.errors import InvalidEvent, InvalidMessage
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.nostr.messages import (
    ClientAuth,
    ClientClose,
    ClientCount,
    ClientReq,
    RelayAuth,
    RelayClosed,
    RelayCount,
    RelayEose,
    RelayEvent,
    RelayNotice,
    RelayOk,
    parse_relay_message,
    split_prefix,
)

BACKOFF_BASE_S = 0.25          # first reconnect delay (seconds, before jitter)
SEEN_PER_SUB = 200_000         # ids remembered per subscription for dedupe
VERIFIED_CACHE = 50_000        # (id -> sig) already verified, shared by subscriptions


def backoff_delay(failures: int, max_backoff: float) -> float:
    """Reconnect delay after `failures` failures in a row: exponential, capped, with jitter
    (uniform in [d/2, d]) so many clients of one restarted relay do not reconnect at once."""
    delay = min(max_backoff, BACKOFF_BASE_S * (2 ** max(0, failures - 1)))
    return random.uniform(delay / 2, delay)


# ------------------------------------------------------------------------ replies
@dataclass(frozen=True, slots=True)
class RelayReply:
    """One relay's answer to a publish. prefix: the relay's machine-readable prefix
    ("duplicate", "blocked", "auth-required", …) or, for local failures, "timeout" /
    "disconnected"; "" when the relay gave none."""

    accepted: bool
    prefix: str
    message: str

    def describe(self) -> str:
        return ("accepted" if self.accepted else "rejected") + (f" ({self.message})" if self.message else "")


class SubscriptionClosed(RelayError):
    """Every relay serving a subscription closed it; `.reasons` maps url -> CLOSED message."""

    def __init__(self, message: str, reasons: dict[str, str]):
        super().__init__(message)
        self.reasons = reasons


# ------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class EventReceived:
    sub_id: str
    event: Event  # not verified yet: SubscriptionState.admit does that


@dataclass(frozen=True, slots=True)
class OkReceived:
    event_id: str
    reply: RelayReply


@dataclass(frozen=True, slots=True)
class EoseReceived:
    sub_id: str


@dataclass(frozen=True, slots=True)
class ClosedByRelay:
    """The relay closed a subscription for good (not an auth-required one we can retry)."""

    sub_id: str
    message: str


@dataclass(frozen=True, slots=True)
class CountReceived:
    sub_id: str
    count: int


@dataclass(frozen=True, slots=True)
class CountRefused:
    sub_id: str
    message: str


@dataclass(frozen=True, slots=True)
class AuthChallenged:
    """A challenge arrived (an AUTH answer is queued when the session has keys)."""

    challenge: str


@dataclass(frozen=True, slots=True)
class AuthFinished:
    """The relay answered our AUTH; REQs waiting for it were queued again (accepted) or
    reported as ClosedByRelay (refused)."""

    accepted: bool
    message: str


@dataclass(frozen=True, slots=True)
class ReqSent:
    """A REQ for this subscription was queued by the session itself (a resend after AUTH)."""

    sub_id: str


@dataclass(frozen=True, slots=True)
class NoticeReceived:
    message: str


@dataclass(frozen=True, slots=True)
class FrameMalformed:
    error: str


SessionEvent = (EventReceived | OkReceived | EoseReceived | ClosedByRelay | CountReceived | CountRefused
                | AuthChallenged | AuthFinished | ReqSent | NoticeReceived | FrameMalformed)


# -------------------------------------------------------------------- subscriptions
class BoundedSet:
    """An insertion-ordered set that forgets its oldest members past `limit`."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int):
        self._items: dict[str, None] = {}
        self._limit = limit

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        if len(self._items) > self._limit:
            del self._items[next(iter(self._items))]

    def __len__(self) -> int:
        return len(self._items)


class Admit(enum.Enum):
    """What happens to an incoming event of a subscription."""

    DELIVER = "events"
    DUPLICATE = "duplicates"
    INVALID = "invalid"
    UNMATCHED = "unmatched"


class Verifier:
    """Id and signature checks, remembered per (id, sig) so N relays' copies cost one check."""

    def __init__(self, limit: int = VERIFIED_CACHE) -> None:
        self._verified: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def __call__(self, event: Event) -> bool:
        known_sig = self._verified.get(event.id)
        if known_sig is not None and known_sig == event.sig and event.id_matches():
            return True
        try:
            event.verify()
        except InvalidEvent:
            return False
        self._verified[event.id] = event.sig
        if len(self._verified) > self._limit:
            self._verified.popitem(last=False)
        return True


class SubscriptionState:
    """One subscription's protocol state across the relays of a pool (no I/O)."""

    def __init__(self, sub_id: str, filters: Sequence[Filter]) -> None:
        if not filters:
            raise ValueError("a subscription needs at least one filter")
        self.sub_id = sub_id
        self.filters: list[Filter] = list(filters)
        self.closed_by: dict[str, str] = {}   # url -> CLOSED message
        self.last_seen: int | None = None     # newest created_at delivered
        self.closed = False
        self.error: SubscriptionClosed | None = None
        self._seen = BoundedSet(SEEN_PER_SUB)
        self._served_by: set[str] = set()     # relays that ever got our REQ
        self._eose_pending: set[str] = set()

    # -- REQ -----------------------------------------------------------------------------
    def resubscribe_since(self, now: int | None = None) -> int | None:
        """The `since` of a REQ sent again to a relay that already had it (after a reconnect
        or AUTH): the newest created_at delivered, inclusive (duplicates are dropped by id),
        so events published while we were away come back. The one place this is computed.

        Never later than `now` (default: the wall clock): relays accept events dated up to
        15 minutes ahead, and a stranger's such event must not make us resubscribe from the
        future and miss everything honest until the clock catches up (cursor poisoning)."""
        if self.last_seen is None:
            return None
        return min(self.last_seen, int(time.time()) if now is None else now)

    def filters_for(self, url: str) -> list[Filter]:
        """Filters for a REQ to `url`: the original ones the first time; on a resubscribe,
        `since` = resubscribe_since() and no limit."""
        since = self.resubscribe_since()
        if url not in self._served_by or since is None:
            return self.filters
        out = []
        for flt in self.filters:
            copy = flt.with_since(since)
            copy.limit = None
            out.append(copy)
        return out

    def req_sent(self, url: str) -> None:
        self._served_by.add(url)
        self._eose_pending.add(url)

    # -- EOSE ----------------------------------------------------------------------------
    @property
    def eose_done(self) -> bool:
        """True when no relay that got our REQ still owes EOSE (or a CLOSED)."""
        return not self._eose_pending

    def relay_done(self, url: str) -> None:
        """`url` sent EOSE, closed the subscription, or went away: it owes nothing more."""
        self._eose_pending.discard(url)

    # -- events --------------------------------------------------------------------------
    def admit(self, event: Event, verify: Verifier) -> Admit:
        """Dedupe by id BEFORE verifying (N relays' copies cost one check), then verify,
        then match the filters; an id counts as seen only once it verified and matched."""
        if event.id in self._seen:
            return Admit.DUPLICATE
        if not verify(event):
            return Admit.INVALID
        if not any(f.matches(event) for f in self.filters):
            return Admit.UNMATCHED
        self._seen.add(event.id)
        if self.last_seen is None or event.created_at > self.last_seen:
            self.last_seen = event.created_at
        return Admit.DELIVER

    # -- CLOSED --------------------------------------------------------------------------
    def closed_by_relay(self, url: str, message: str, serving: Sequence[str]) -> SubscriptionClosed | None:
        """Record that `url` CLOSED us; when no connected relay (`serving`) still serves the
        subscription it is over: returns the error its reader gets."""
        self.closed_by[url] = message
        self.relay_done(url)
        still = [u for u in serving if u not in self.closed_by]
        if still or self.closed:
            return None
        reasons = "; ".join(f"{u}: {m or 'closed'}" for u, m in self.closed_by.items())
        self.error = SubscriptionClosed(f"subscription {self.sub_id} closed by relays: {reasons}",
                                        dict(self.closed_by))
        self.closed = True
        return self.error


# --------------------------------------------------------------------------- session
class AuthState(enum.Enum):
    NONE = "none"          # no AUTH sent on this connection (or a new challenge came)
    PENDING = "pending"    # AUTH sent, no OK yet
    ACCEPTED = "accepted"
    REFUSED = "refused"


class RelaySession:
    """The NIP-01/42/45 state of one relay link, across its connections (no I/O).

    `subscriptions` is a read-only view of the pool's open subscriptions by id.
    """

    def __init__(self, url: str, keys: Keys | None, subscriptions: Mapping[str, SubscriptionState]) -> None:
        self.url = url
        self.keys = keys
        self._subs = subscriptions
        self.connected = False
        self.challenge: str | None = None
        self.auth = AuthState.NONE
        self._auth_event_id: str | None = None
        self._reqs: set[str] = set()           # sub ids whose REQ this connection carries
        self._counts: set[str] = set()         # COUNT ids awaiting an answer
        self._auth_waiting: set[str] = set()   # sub ids to REQ again once authenticated
        self._auth_retried: set[str] = set()   # sub ids already retried after auth-required
        self._out: list[str] = []

    # -- connection ----------------------------------------------------------------------
    def connection_made(self) -> None:
        """A fresh connection: nothing sent on it yet, no challenge, not authenticated."""
        self.connected = True
        self._reqs.clear()
        self._counts.clear()
        self.challenge = None
        self.auth = AuthState.NONE
        self._auth_event_id = None
        self._auth_waiting.clear()
        self._out.clear()

    def connection_lost(self) -> None:
        """Every REQ of the connection is gone; subscriptions owe nothing more from here."""
        self.connected = False
        for sub in self._subs.values():
            sub.relay_done(self.url)
        self._out.clear()
        if self.auth is AuthState.PENDING:
            self.auth = AuthState.REFUSED

    def data_to_send(self) -> list[str]:
        """Frames the session queued on its own (AUTH answers, REQs resent after AUTH)."""
        out, self._out = self._out, []
        return out

    # -- client frames -------------------------------------------------------------------
    def req(self, sub: SubscriptionState) -> str | None:
        """The REQ frame for `sub`, or None when this connection already carries it or the
        subscription is closed (locally or by this relay)."""
        if sub.sub_id in self._reqs or sub.closed or self.url in sub.closed_by:
            return None
        self._reqs.add(sub.sub_id)
        frame = ClientReq(sub.sub_id, sub.filters_for(self.url)).to_json()
        sub.req_sent(self.url)
        return frame

    def close(self, sub_id: str) -> str | None:
        """The CLOSE frame for a subscription this connection carries (else None)."""
        self._auth_retried.discard(sub_id)
        self._auth_waiting.discard(sub_id)
        if sub_id not in self._reqs:
            return None
        self._reqs.discard(sub_id)
        return ClientClose(sub_id).to_json()

    def count(self, sub_id: str, filters: Sequence[Filter]) -> str:
        self._counts.add(sub_id)
        return ClientCount(sub_id, list(filters)).to_json()

    def count_done(self, sub_id: str) -> None:
        self._counts.discard(sub_id)

    def start_auth(self) -> str | None:
        """Answer the current challenge (once per challenge): the AUTH frame, or None without
        keys, without a challenge, or while an answer is pending."""
        if self.keys is None or self.challenge is None or self.auth is AuthState.PENDING:
            return None
        auth = ClientAuth.answer(self.keys, self.url, self.challenge)
        self._auth_event_id = auth.event.id
        self.auth = AuthState.PENDING
        return auth.to_json()

    # -- relay frames --------------------------------------------------------------------
    def receive(self, frame: str | bytes) -> list[SessionEvent]:
        """Parse one frame from the relay; the events it means, in order."""
        try:
            msg = parse_relay_message(frame)
        except InvalidMessage as exc:
            return [FrameMalformed(str(exc))]
        if isinstance(msg, RelayEvent):
            return [EventReceived(msg.sub_id, msg.event)]
        if isinstance(msg, RelayOk):
            if msg.event_id == self._auth_event_id and self.auth is AuthState.PENDING:
                return self._auth_answered(msg.accepted, msg.message)
            return [OkReceived(msg.event_id, RelayReply(msg.accepted, msg.prefix, msg.message))]
        if isinstance(msg, RelayEose):
            sub = self._subs.get(msg.sub_id)
            if sub is not None:
                sub.relay_done(self.url)
            return [EoseReceived(msg.sub_id)]
        if isinstance(msg, RelayClosed):
            return self._closed(msg)
        if isinstance(msg, RelayAuth):
            self.challenge = msg.challenge
            if self.auth in (AuthState.ACCEPTED, AuthState.REFUSED):
                self.auth = AuthState.NONE  # a new challenge: authenticate again
            frame_out = self.start_auth()
            if frame_out is not None:
                self._out.append(frame_out)
            return [AuthChallenged(msg.challenge)]
        if isinstance(msg, RelayCount):
            if msg.sub_id in self._counts:
                self._counts.discard(msg.sub_id)
                return [CountReceived(msg.sub_id, msg.count)]
            return []
        if isinstance(msg, RelayNotice):
            return [NoticeReceived(msg.message)]
        return []  # pragma: no cover - parse_relay_message returns one of the above

    def _closed(self, msg: RelayClosed) -> list[SessionEvent]:
        self._reqs.discard(msg.sub_id)
        if msg.sub_id in self._counts:
            self._counts.discard(msg.sub_id)
            return [CountRefused(msg.sub_id, msg.message)]
        if msg.sub_id not in self._subs:
            return []
        prefix, _ = split_prefix(msg.message)
        if prefix == "auth-required" and self.keys is not None and msg.sub_id not in self._auth_retried:
            # EOSE stays pending for this relay: the REQ is sent again once authenticated.
            self._auth_retried.add(msg.sub_id)
            self._auth_waiting.add(msg.sub_id)
            if self.auth is AuthState.ACCEPTED:
                return self._resend_waiting(True)  # already authenticated on this connection
            if self.auth is AuthState.REFUSED:
                self.auth = AuthState.NONE
            frame_out = self.start_auth()  # None until the challenge arrives
            if frame_out is not None:
                self._out.append(frame_out)
            return []
        return [ClosedByRelay(msg.sub_id, msg.message)]

    def _auth_answered(self, accepted: bool, message: str) -> list[SessionEvent]:
        self.auth = AuthState.ACCEPTED if accepted else AuthState.REFUSED
        return [AuthFinished(accepted, message), *self._resend_waiting(accepted)]

    def _resend_waiting(self, accepted: bool) -> list[SessionEvent]:
        """REQ again the subscriptions that waited for AUTH (or close them when it failed)."""
        events: list[SessionEvent] = []
        waiting = sorted(self._auth_waiting)
        self._auth_waiting.clear()
        for sub_id in waiting:
            sub = self._subs.get(sub_id)
            if sub is None:
                continue
            if accepted and self.connected:
                self._reqs.discard(sub_id)
                sub.closed_by.pop(self.url, None)
                frame = self.req(sub)
                if frame is not None:
                    self._out.append(frame)
                    events.append(ReqSent(sub_id))
            else:
                events.append(ClosedByRelay(sub_id, "auth-required: authentication failed"))
        return events
