"""`pylon wallet balance|invoice|pay|sweep|fund|serve-nwc`: the wallet, for people.

The wallet comes from `--wallet URI`, else PYLON_WALLET / config.toml (pylon.ops.config). Its URI
is never printed (only `redact_uri`), except the connection URI `serve-nwc` issues, which is
the point of that command.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import typer

from cli.common import WalletFileOpt, console, err_console, fail, handle_errors, print_json, run
from cli.defaults import load_settings
from pylon.ops.secrets import wallet_from_flags
from wallet.base import MAX_AMOUNT_MSAT

app = typer.Typer(help="Lightning wallet: balance, invoices, payments, NWC service.", no_args_is_help=True)
T = TypeVar("T")

WalletOpt = typer.Option(None, "--wallet", "-w", help="Wallet URI (default: PYLON_WALLET or config).",
                         show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print a JSON object.")


def _wallet_uri(flag: str | None, file: Path | None = None) -> str:
    uri = load_settings({"wallet": wallet_from_flags(flag, file)}).wallet
    if not uri:
        fail("no wallet configured: pass --wallet URI or set PYLON_WALLET", 2)
    return uri  # type: ignore[return-value]


async def _with_wallet(uri: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    from wallet import connect_wallet

    w = await connect_wallet(uri)
    try:
        return await fn(w)
    finally:
        await w.aclose()


@app.command("balance")
@handle_errors
def balance(wallet: str | None = WalletOpt, wallet_file: Path | None = WalletFileOpt, json_out: bool = JsonOpt) -> None:
    """Print the spendable balance (msat)."""
    from wallet import redact_uri

    uri = _wallet_uri(wallet, wallet_file)
    msat = run(_with_wallet(uri, lambda w: w.balance()))
    if json_out:
        print_json({"wallet": redact_uri(uri), "balance_msat": msat})
    else:
        console.print(f"{msat} msat ({msat // 1000} sat)  [dim]{redact_uri(uri)}[/]", highlight=False)


@app.command("invoice")
@handle_errors
def invoice(amount_msat: int = typer.Argument(..., min=1, help="Amount in millisats."),
            memo: str = typer.Option("", "--memo", "-m", help="Invoice description."),
            expiry_s: int = typer.Option(600, "--expiry", min=1, help="Seconds until it expires."),
            wait: bool = typer.Option(False, "--wait", help="Then wait until it is paid (exit 0) or expires (exit 1)."),
            wallet: str | None = WalletOpt, wallet_file: Path | None = WalletFileOpt, json_out: bool = JsonOpt) -> None:
    """Create an invoice and print its BOLT11 string."""
    from wallet.base import Invoice, InvoiceState, Wallet

    async def make(w: Wallet) -> tuple[Invoice, InvoiceState | None] | None:
        inv = await w.make_invoice(amount_msat, memo, expiry_s)
        if json_out:
            print_json({"bolt11": inv.bolt11, "payment_hash": inv.payment_hash, "amount_msat": inv.amount_msat,
                        "expires_at": inv.expires_at})
        else:
            console.print(inv.bolt11, highlight=False, soft_wrap=True)
            err_console.print(f"payment hash {inv.payment_hash}", highlight=False)
        if not wait:
            return None
        sys.stdout.flush()  # piped: the payer reads the invoice before the wait ends
        if not json_out:
            err_console.print(f"waiting for the payment (expires in {expiry_s} s; Ctrl-C stops waiting)", highlight=False)
        from wallet.waiting import wait_for_invoice  # the wallet's own wait (dev, NWC payment_received) or lookups

        return inv, await wait_for_invoice(w, inv.payment_hash, inv.expires_at, label="invoice")

    waited = run(_with_wallet(_wallet_uri(wallet, wallet_file), make))
    if waited is None:
        return
    inv, state = waited
    word = state.value if state is not None else "unknown (the wallet did not answer)"
    if json_out:
        print_json({"payment_hash": inv.payment_hash, "state": word})
    if state != InvoiceState.SETTLED:
        fail(f"invoice {inv.payment_hash[:16]}… not paid: {word}")
    if not json_out:
        console.print(f"paid {inv.amount_msat} msat", highlight=False)


@app.command("pay")
@handle_errors
def pay(bolt11: str = typer.Argument(..., help="BOLT11 invoice to pay."),
        max_msat: int | None = typer.Option(None, "--max-msat", min=0,
                                            help="Refuse if the invoice asks more (default: its own amount)."),
        wallet: str | None = WalletOpt, wallet_file: Path | None = WalletFileOpt, json_out: bool = JsonOpt) -> None:
    """Pay an invoice; prints the preimage (the proof of payment)."""
    from wallet.bolt11_codec import decode_bolt11

    decoded = decode_bolt11(bolt11)
    if decoded.amount_msat is None:
        fail("amountless invoices are not supported")
    limit = decoded.amount_msat if max_msat is None else max_msat
    p = run(_with_wallet(_wallet_uri(wallet, wallet_file), lambda w: w.pay_invoice(decoded.bolt11, max_msat=limit)))
    if json_out:
        print_json({"payment_hash": p.payment_hash, "preimage": p.preimage, "amount_msat": p.amount_msat,
                    "fee_msat": p.fee_msat})
    else:
        console.print(f"paid {p.amount_msat} msat (fee {p.fee_msat} msat)", highlight=False)
        console.print(f"preimage {p.preimage}", highlight=False)


@app.command("sweep")
@handle_errors
def sweep(to: str | None = typer.Option(None, "--to", metavar="BOLT11|user@domain",
                                        help="Where the money goes: an invoice with an amount, or a Lightning address."),
          keep_msat: int = typer.Option(0, "--keep", min=0, metavar="MSAT", help="Leave this much in the wallet."),
          max_fee_msat: int = typer.Option(10_000, "--max-fee-msat", min=0,
                                           help="Routing fees kept aside (the amount to an address is what is left)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be paid; pay nothing."),
          history: bool = typer.Option(False, "--history", help="List past sweeps instead."),
          wallet: str | None = WalletOpt, wallet_file: Path | None = WalletFileOpt, json_out: bool = JsonOpt) -> None:
    """Pay out what the wallet holds above --keep, to an invoice or a Lightning address (history kept)."""
    from pylon.ops.payouts import PayoutHistory
    from pylon.ops.payouts import sweep as do_sweep

    if history:
        with PayoutHistory() as hist:
            rows = hist.list(None)
        if json_out:
            print_json([r.to_dict() for r in rows])
            return
        for r in rows:
            console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r.at))}  {r.status:7} {r.amount_msat} msat"
                          f"  fee {r.fee_msat if r.fee_msat is not None else '-'}  -> {r.destination}"
                          + (f"  ({r.error})" if r.error else ""), highlight=False, markup=False)
        if not rows:
            console.print("no sweeps yet", highlight=False)
        return
    if not to:
        fail("--to BOLT11|user@domain is required (or --history)", 2)
    plan, payout = run(_with_wallet(_wallet_uri(wallet, wallet_file), lambda w: do_sweep(
        w, to, keep_msat=keep_msat, fee_budget_msat=max_fee_msat, dry_run=dry_run)))
    data = {"destination": plan.destination, "balance_msat": plan.balance_msat, "keep_msat": plan.keep_msat,
            "amount_msat": plan.amount_msat, "dry_run": dry_run, "payout": payout.to_dict() if payout else None}
    if json_out:
        print_json(data)
    elif payout is None:
        console.print(f"would pay {plan.amount_msat} msat to {plan.destination} (balance {plan.balance_msat}, "
                      f"keep {plan.keep_msat})", highlight=False, markup=False)
    else:
        console.print(f"swept {payout.amount_msat} msat (fee {payout.fee_msat} msat) to {payout.destination}",
                      highlight=False, markup=False)


@app.command("fund")
@handle_errors
def fund(amount_msat: int = typer.Argument(..., min=1, max=MAX_AMOUNT_MSAT,
                                           help="Millisats to credit (at most 21 million bitcoin)."),
         wallet: str | None = WalletOpt, wallet_file: Path | None = WalletFileOpt, json_out: bool = JsonOpt) -> None:
    """Credit a dev:// wallet account (development ledgers only: money from nothing)."""
    from wallet.dev import parse_dev_uri
    from wallet.dev import fund as dev_fund
    from wallet.uri import scheme_of

    uri = _wallet_uri(wallet, wallet_file)
    if scheme_of(uri) != "dev":
        fail("`pylon wallet fund` only works with dev:// wallets; fund real wallets with Lightning", 2)
    path, account = parse_dev_uri(uri)
    new_balance = dev_fund(path, account, amount_msat)
    if json_out:
        print_json({"account": account, "ledger": str(path), "funded_msat": amount_msat, "balance_msat": new_balance})
    else:
        console.print(f"{account}: +{amount_msat} msat, balance {new_balance} msat", highlight=False)


@app.command("serve-nwc")
@handle_errors
def serve_nwc(relay: list[str] = typer.Option(..., "--relay", "-r", help="Relay URL (repeatable)."),
              budget_msat: int | None = typer.Option(None, "--budget-msat", min=0,
                                                     help="Spending budget of the issued connection."),
              wallet: str | None = WalletOpt, wallet_file: Path | None = WalletFileOpt,
              json_out: bool = JsonOpt) -> None:
    """Expose the wallet as a NIP-47 service: print a connection URI, serve until Ctrl-C."""
    from wallet.nwc_service import NwcService

    uri = _wallet_uri(wallet, wallet_file)

    async def serve() -> None:
        from wallet import connect_wallet

        w = await connect_wallet(uri)
        try:
            service = NwcService(w, relay, budget_msat=budget_msat)
            conn = service.new_connection(name="cli")
            async with service.running():
                if json_out:
                    print_json({"uri": service.uri_for(conn), "service_pubkey": service.pubkey,
                                "budget_msat": budget_msat, "relays": relay})
                else:
                    console.print(service.uri_for(conn), highlight=False, soft_wrap=True)
                    err_console.print(f"NWC service {service.pubkey[:16]}… on {', '.join(relay)}; "
                                      f"budget {budget_msat if budget_msat is not None else 'unlimited'} msat. "
                                      "Ctrl-C to stop.", highlight=False)
                import sys

                sys.stdout.flush()
                await asyncio.Event().wait()
        finally:
            await w.aclose()

    run(serve())
