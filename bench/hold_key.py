"""What selling the key with a NIP-47 hold invoice costs, against the chosen-preimage flow, in one run.

Embedded relay; a priced provider on the OpenAI server double (fixed 20 ms latency); targeted
asks (no decision window), the customer paying with the dev wallet. Three providers' wallets:

- `preimage` (the baseline): the dev wallet itself, invoice for a chosen preimage; the
  wallet settles by itself when paid;
- `hold`: an NWC connection to an NwcService over the same dev ledger (what `pylon wallet
  serve-nwc` runs), so the key is sold with make_hold_invoice, the hold_invoice_accepted
  notification and settle_hold_invoice: two more NWC round trips through the relay per job;
- `nwc_pay_first`: the same NWC wallet, the customer not asking for the key (pay-first).

At 1 and 16 asks at once: median latency and jobs/s, with ratios against `preimage`.

    .venv/bin/python bench/hold_key.py [--jobs 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.market import LIFTED, asks, paid_stack  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.customer.ledger import Ledger  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402
from wallet import connect_wallet  # noqa: E402
from wallet.dev import DevWallet  # noqa: E402
from wallet.nwc_service import NwcService  # noqa: E402


async def main(args: argparse.Namespace) -> dict:
    out: dict = {"jobs": args.jobs}
    async with paid_stack() as (t, ledger, relay, backend):
        service = NwcService(DevWallet(ledger, "provider"), [relay.url])
        conn = service.new_connection(name="provider")
        async with service.running():
            nwc = await connect_wallet(service.uri_for(conn))
            flows = {
                "preimage": (DevWallet(ledger, "provider"), True),
                "hold": (nwc, True),
                "nwc_pay_first": (nwc, False),
            }
            for name, (wallet, key) in flows.items():
                provider = Provider([relay.url], backend, keys=Keys.generate(), db_path=t / f"{name}.sqlite",
                                    free=False, price_msat=1_000, wallet=wallet)
                client = PylonClient([relay.url], keys=Keys.generate(), wallet=DevWallet(ledger, "customer"),
                                     ledger=Ledger(t / f"{name}-receipts.sqlite"), key_delivery=key,
                                     **LIFTED)  # type: ignore[arg-type]
                async with provider.running(), client:
                    for c in (1, 16):
                        row = await asks(client, args.jobs, c, provider=provider.pubkey)
                        assert row["paid_fraction"] == 1.0
                        out.setdefault(f"c{c}", {})[name] = row
            await nwc.aclose()
    for c in (1, 16):
        row = out[f"c{c}"]
        base = row["preimage"]
        for name in ("hold", "nwc_pay_first"):
            row[f"{name}_added_ms"] = round(row[name]["median_ms"] - base["median_ms"], 1)
            row[f"{name}_per_s_ratio"] = round(row[name]["per_s"] / base["per_s"], 2)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=24)
    result = asyncio.run(main(ap.parse_args()))
    print(json.dumps(result, indent=2))
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "hold_key.json").write_text(json.dumps(result, indent=2))
