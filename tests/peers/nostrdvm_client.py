"""A nostrdvm-style NIP-90 customer, run by .peers/nostrdvm-venv/bin/python (nostr-dvm 1.1.8).

nostrdvm has no "send a job and wait" helper: its bot (nostr_dvm/bot.py) builds a request with
nostr-sdk's EventBuilder (tags `i` text, `alt`, `relays`, `output`, `p`) and reads replies from a
`#p` subscription. This script does the same and reads the replies by the bot's rules
(handle_nip90_feedback / handle_nip90_response_event):
  - feedback: `status` tag (its 3rd element, if any, is the message); when tagged `encrypted` and
    addressed to us, the content is decrypted (NIP-44, else NIP-04) and MUST be a JSON tag array,
    from which status / content / amount are read again (unencrypted content is ignored then);
  - result: the content, decrypted (NIP-44, else NIP-04) when tagged `encrypted`;
  - payment-required: the `amount` tag (msat) and, when present, its bolt11, paid through LNbits
    with nostrdvm's own pay_bolt11_ln_bits when `--lnbits URL|ADMINKEY` is given.
Prints one line `RESULT <json>` with what it read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def run(args: argparse.Namespace) -> dict:
    from nostr_sdk import (ClientBuilder, EventBuilder, Filter, Keys, Kind, Nip44Version, PublicKey, RelayUrl,
                           ReqTarget, SignerAuthenticator, Tag, Timestamp, nip04_decrypt, nip44_decrypt, nip44_encrypt)

    from nostr_dvm.utils.sdk_utils import ensure_sdk_callback_loop, handle_notifications

    ensure_sdk_callback_loop()
    keys = Keys.generate()
    me = keys.public_key().to_hex()
    client = ClientBuilder().authenticator(SignerAuthenticator(keys)).build()  # as nostrdvm's dvm.py
    await client.add_relay(RelayUrl.parse(args.relay))
    await client.connect()

    private = [["i", args.prompt, "text"]]
    public = [["alt", "text-generation"], ["relays", args.relay], ["output", "text/plain"]]
    if args.bid:
        public.append(["bid", str(args.bid)])
    content = ""
    if args.encrypt:
        content = nip44_encrypt(keys.secret_key(), PublicKey.parse(args.provider), json.dumps(private),
                                Nip44Version.V2)
        tags = [["p", args.provider], ["encrypted"], *public]
    else:
        tags = [*private, *public] + ([["p", args.provider]] if args.provider else [])
    request = EventBuilder(Kind(5050), content).tags([Tag.parse(t) for t in tags]).finalize(keys)
    rid = request.id().to_hex()
    out: dict = {"request_id": rid, "feedback": [], "result": None, "paid": False, "errors": []}
    done = asyncio.Event()

    def decrypt(event) -> str:
        try:
            return nip44_decrypt(keys.secret_key(), event.author(), event.content())
        except Exception:
            return nip04_decrypt(keys.secret_key(), event.author(), event.content())

    async def on_feedback(event) -> None:
        tags = [t.to_vec() for t in event.tags()]
        status, content, amount, bolt11 = "", event.content(), None, None
        encrypted = any(t[0] == "encrypted" for t in tags)
        ptag = next((t[1] for t in tags if t[0] == "p" and len(t) > 1), "")
        for t in tags:
            if t[0] == "status":
                status = t[1]
                if len(t) > 2:
                    content = t[2]
        if encrypted:
            if ptag != me:
                return
            tags = json.loads(decrypt(event))  # the bot: a JSON tag array, or the feedback is dropped
            for t in tags:
                if t[0] == "status":
                    status = t[1]
                    if len(t) > 2:
                        content = t[2]
                elif t[0] == "content":
                    content = t[1]
        for t in tags:
            if t[0] == "amount":
                amount = int(t[1])
                bolt11 = t[2] if len(t) > 2 else None
        out["feedback"].append({"status": status, "content": content, "amount_msat": amount, "bolt11": bolt11})
        if status == "payment-required" and bolt11 and args.lnbits and not out["paid"]:
            from nostr_dvm.utils.dvmconfig import DVMConfig
            from nostr_dvm.utils.zap_utils import pay_bolt11_ln_bits

            cfg = DVMConfig()
            cfg.LNBITS_URL, cfg.LNBITS_ADMIN_KEY = args.lnbits.split("|", 1)
            paid = await asyncio.to_thread(pay_bolt11_ln_bits, bolt11, cfg)
            out["paid"] = paid != "Error"
            out["payment_hash"] = paid
        if status == "error":
            done.set()

    async def on_result(event) -> None:
        tags = [t.to_vec() for t in event.tags()]
        encrypted = any(t[0] == "encrypted" for t in tags)
        ptag = next((t[1] for t in tags if t[0] == "p" and len(t) > 1), "")
        text = event.content()
        if encrypted:
            if ptag != me:
                return
            text = decrypt(event)
        out["result"] = text
        out["result_tags"] = [t for t in tags if t[0] in ("amount", "status", "e", "p", "encrypted")]
        done.set()

    class Handler:
        async def handle(self, relay_url, subscription_id, event):
            e = next((t.to_vec()[1] for t in event.tags() if t.to_vec()[0] == "e"), "")
            if e != rid:
                return
            try:
                if event.kind().as_u16() == 7000:
                    await on_feedback(event)
                elif event.kind().as_u16() == 6050:
                    await on_result(event)
            except Exception as exc:  # the bot prints and drops what it cannot read
                out["errors"].append(f"{event.kind().as_u16()}: {type(exc).__name__}: {exc}")

        async def handle_msg(self, relay_url, msg):
            return

    await client.subscribe(ReqTarget.auto([Filter().pubkey(keys.public_key()).kinds([Kind(7000), Kind(6050)])
                                           .since(Timestamp.from_secs(int(time.time()) - 5))]), None)
    task = asyncio.create_task(handle_notifications(client, Handler()))
    await asyncio.sleep(0.3)
    await client.send_event(request)
    try:
        await asyncio.wait_for(done.wait(), args.timeout)
    except asyncio.TimeoutError:
        out["errors"].append("timeout")
    task.cancel()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--provider", default="")
    ap.add_argument("--encrypt", action="store_true")
    ap.add_argument("--bid", type=int, default=0)
    ap.add_argument("--lnbits", default="")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    out = asyncio.run(run(args))
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
