"""Refunds for paid jobs that failed: the wire format (docs/PROTOCOL.md, section "Refunds").

A provider is paid before it runs a job. When the job then fails for good (the backend stayed
down past the job's deadline, an internal error), the provider owes the money back. Lightning
has no "send to this pubkey" without an invoice, so the customer gives one:

1. The provider's `error` feedback for a paid job carries `["refund", "<msat>"]`: it offers
   that amount back (and has recorded the offer before publishing).
2. The customer answers with a signed refund request, kind 7051, naming the job (`e`), the
   provider (`p`) and a fresh invoice of its own wallet for exactly that amount
   (`["amount", "<msat>", "<bolt11>"]`).
3. The provider pays that invoice once per job (the job store's refund state is claimed with
   one conditional UPDATE before the wallet is asked), only when the request is signed by the
   job's customer, names a job it was paid for and that failed, and the invoice's amount is the
   offered one. A repeated request (another relay, a restarted customer) pays nothing more.

The customer sees the refund arrive on its own invoice (wallet lookup), so no confirmation event
is needed. Both sides record it: the customer's receipt (refund_msat, refund_status) and the
provider's job row (refund_msat, refund_status, refund_hash).
"""

from __future__ import annotations

from dataclasses import dataclass

from pylon.jobs.nip90 import JobParseError, parse_int
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys

KIND_REFUND_REQUEST = 7051
REFUND_TAG = "refund"


def refund_offer(event: Event) -> int | None:
    """The msat a feedback event offers back (`["refund", msat]`), or None."""
    tag = event.first_tag(REFUND_TAG)
    if not tag or len(tag) < 2:
        return None
    try:
        value = parse_int(tag[1], "refund")
    except JobParseError:
        return None
    return value if value > 0 else None


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A customer's signed request: pay `bolt11` (`amount_msat`) back for the failed job `job_id`."""

    job_id: str
    provider: str
    customer: str
    amount_msat: int
    bolt11: str
    event: Event | None = None

    @staticmethod
    def build(keys: Keys, *, job_id: str, provider: str, amount_msat: int, bolt11: str) -> Event:
        tags = [["e", job_id], ["p", provider], ["amount", str(int(amount_msat)), bolt11],
                ["alt", "refund request for a paid NIP-90 job that failed"]]
        return Event.build(keys, KIND_REFUND_REQUEST, "", tags)

    @classmethod
    def from_event(cls, event: Event) -> "RefundRequest":
        if event.kind != KIND_REFUND_REQUEST:
            raise JobParseError(f"not a kind-{KIND_REFUND_REQUEST} refund request (kind {event.kind})")
        e_tag, p_tag, amount = event.first_tag("e"), event.first_tag("p"), event.first_tag("amount")
        if not e_tag or len(e_tag) < 2 or len(e_tag[1]) != 64:
            raise JobParseError("refund request has no valid ['e', <job id>] tag")
        if not p_tag or len(p_tag) < 2:
            raise JobParseError("refund request names no provider ('p' tag)")
        if not amount or len(amount) < 3 or not amount[2].strip():
            raise JobParseError("refund request needs ['amount', msat, bolt11]")
        return cls(e_tag[1].lower(), p_tag[1].lower(), event.pubkey, parse_int(amount[1], "amount"),
                   amount[2].strip(), event)
