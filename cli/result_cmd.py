"""`pylon result JOB_ID`: fetch a job's answer from the relays (after a crash, an outage, a timeout).

Prints the result's text (`--json`: one object with the text, provider, usage and receipt). When
the job was paid (a receipt in PYLON_HOME's ledger) only the paid provider's result counts; when
that provider reported an error and offered a refund, `--wallet` (or PYLON_WALLET) claims it
(docs/PROTOCOL.md, "Refunds"). No result on the relays is one line and exit code 4.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Optional

import typer

from cli.common import RelayOpt, check_wallet_uri, handle_errors, print_json, run
from pylon.errors import ConfigError, JobError, ProviderError
from cli.defaults import load_settings


async def _fetch(relays: list[str], job_id: str, wallet_uri: str | None, timeout: float) -> dict:
    from pylon.customer.client import PylonClient
    from pylon.customer.refunds import request_refund

    wallet = None
    if wallet_uri:
        from wallet import open_wallet

        wallet = open_wallet(wallet_uri)
    try:
        async with PylonClient(relays, wallet=wallet) as client:
            # a busy relay may answer late or partly: ask again until the result or the deadline
            deadline = time.monotonic() + timeout
            while True:
                found = await client.fetch_result(job_id, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                if found.result is not None or time.monotonic() + 0.5 >= deadline:
                    break
                await asyncio.sleep(0.5)
            receipt = client.payments.ledger.intent_for_job(job_id) if client.payments is not None else None
            if found.result is None and found.refund_offer_msat and receipt is not None and wallet is not None:
                assert client.payments is not None and client.pool is not None
                receipt = await request_refund(client.payments.ledger, wallet, client.keys, client.pool, receipt)
    finally:
        if wallet is not None:
            await wallet.aclose()
    out: dict = {"job_id": job_id, "receipt": receipt.to_dict() if receipt is not None else None}
    if found.result is not None:
        r = found.result
        out.update(text=r.text, provider=r.provider, model=r.model, result_event_id=r.event.id if r.event else None,
                   usage={"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens},
                   amount_msat=r.amount_msat)
    else:
        out.update(error=found.error, provider=found.error_provider, refund_offer_msat=found.refund_offer_msat)
    return out


def _job_id(value: str) -> str:
    """A job id as 64 hex characters: given so, or as a nevent/note (NIP-19) naming the job request."""
    from pylon.nostr.bech32 import event_id_from

    job_id = event_id_from(value)
    if job_id is None:
        raise ConfigError(f"{value.strip()[:70]!r} is not a job id",
                          hint="give the job's 64-hex id (as `pylon ask --json` and `pylon history --json` "
                               "print it) or its nevent1…/note1…")
    return job_id


@handle_errors
def result(
    job_id: str = typer.Argument(..., metavar="JOB_ID", help="The job's id (64 hex characters, or its note1…/nevent1…)."),
    relay: Optional[list[str]] = RelayOpt,
    wallet: Optional[str] = typer.Option(None, "--wallet", help="Wallet to receive an offered refund with."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to keep asking the relays."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Fetch a job's result from the relays by its id (and claim a refund its provider offered)."""
    job_id = _job_id(job_id)
    settings = load_settings({"relays": relay, "wallet": wallet})
    check_wallet_uri(settings.wallet)
    out = run(_fetch(settings.relays, job_id, settings.wallet, timeout))
    if as_json:
        print_json(out)
    elif "text" in out:
        sys.stdout.write(out["text"] + "\n")
    if "text" in out:
        return
    receipt = out["receipt"] or {}
    refunded = receipt.get("refund_status") == "refunded"
    if out.get("error"):
        raise ProviderError(f"job {job_id[:12]}… failed at provider {str(out['provider'])[:12]}…: {out['error']}"
                            + (f"; the {receipt['refund_msat']} msat paid were refunded" if refunded else
                               f"; it offers a refund of {out['refund_offer_msat']} msat (pass --wallet to claim it)"
                               if out.get("refund_offer_msat") else ""))
    raise JobError(f"no result for job {job_id[:12]}… on {', '.join(settings.relays)} (yet); "
                   "the provider may still be working or the relays may have dropped it")
