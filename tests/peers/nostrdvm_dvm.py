"""Runs nostrdvm's own kind-5050 DVM (TextGenerationLLMLite, PyPI nostr-dvm 1.1.8) on one relay.

Executed by .peers/nostrdvm-venv/bin/python (never imported by the test suite: nostrdvm has its
own pins); tests/peers/nostrdvm_peer.py starts it. litellm is pointed at an OpenAI-compatible
server through `OPENAI_API_BASE` with model `openai/<name>`. The config is built by hand (no
.env, no LNbits account creation on a public host): relays, key, price and, when given, an
LNbits instance (its invoice/admin keys) so that payment-required feedback carries a bolt11.

    python nostrdvm_dvm.py --relay ws://127.0.0.1:P --secret HEX --model tiny --fix-cost 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--secret", required=True, help="hex secret key of the DVM")
    ap.add_argument("--model", required=True, help="model name served at OPENAI_API_BASE")
    ap.add_argument("--fix-cost", type=float, default=0.0, help="sats per job")
    ap.add_argument("--lnbits-url", default="")
    ap.add_argument("--lnbits-invoice-key", default="")
    ap.add_argument("--lnbits-admin-key", default="")
    args = ap.parse_args()

    from nostr_sdk import Keys, LogLevel

    from nostr_dvm.tasks.textgeneration_llmlite import TextGenerationLLMLite
    from nostr_dvm.utils.admin_utils import AdminConfig
    from nostr_dvm.utils.dvmconfig import DVMConfig
    from nostr_dvm.utils.nip89_utils import NIP89Config

    keys = Keys.parse(args.secret)
    cfg = DVMConfig()
    cfg.PRIVATE_KEY = args.secret
    cfg.PUBLIC_KEY = keys.public_key().to_hex()
    cfg.IDENTIFIER = "pylon_interop"
    cfg.RELAY_LIST = [args.relay]
    cfg.ANNOUNCE_RELAY_LIST = [args.relay]
    cfg.SYNC_DB_RELAY_LIST = [args.relay]
    cfg.FIX_COST = args.fix_cost
    cfg.PER_UNIT_COST = 0
    cfg.LNBITS_URL = args.lnbits_url
    cfg.LNBITS_INVOICE_KEY = args.lnbits_invoice_key
    cfg.LNBITS_ADMIN_KEY = args.lnbits_admin_key
    cfg.DELETE_ANNOUNCEMENT_ON_SHUTDOWN = False
    cfg.LOGLEVEL = LogLevel.DEBUG
    cfg.USE_OWN_VENV = False

    nip89 = NIP89Config()
    nip89.DTAG = "pylon-interop-llm"
    nip89.PK = args.secret
    nip89.CONTENT = json.dumps({
        "name": "nostrdvm LLM",
        "about": "nostrdvm's TextGenerationLLMLite behind an OpenAI-compatible server",
        "supportsEncryption": True,
        "acceptsNutZaps": False,
        "nip90Params": {"model": {"required": False, "values": [args.model]}},
    })
    admin = AdminConfig()
    admin.REBROADCAST_NIP89 = True

    dvm = TextGenerationLLMLite(name="nostrdvm LLM", dvm_config=cfg, nip89config=nip89, admin_config=admin,
                                options={"default_model": f"openai/{args.model}", "server": ""})
    dvm.run()
    print("READY " + cfg.PUBLIC_KEY, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
