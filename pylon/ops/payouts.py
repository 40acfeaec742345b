"""Payouts: move what a provider earned out of its receiving wallet (`pylon wallet sweep`).

    pylon wallet sweep --to BOLT11|user@domain --keep MSAT [--max-fee-msat N] [--dry-run]

* `--to BOLT11`: an invoice with an amount, made by the wallet the money goes to; it is paid only
  if the balance covers it plus `--keep` plus the fee budget.
* `--to user@domain` (a Lightning address, LUD-16): the amount is everything above `--keep` and
  the fee budget; the address's LNURL-pay service is asked for an invoice of exactly that amount
  (https, or http for a host on this machine/network), which is checked (amount, not expired,
  the wallet's network) before it is paid.

Every sweep is written to PYLON_HOME/payouts.sqlite (mode 0600) *before* it is paid (status
`paying`), then marked `paid` (with fee and preimage) or `failed`: the history (`--history`)
shows every payout, and an invoice whose payment hash was already paid is never paid again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pylon.errors import ConfigError, PaymentError, StorageError
from pylon.home import db_path, private_file

DEFAULT_FEE_BUDGET_MSAT = 10_000  # kept aside for routing fees when the amount is ours to choose
_SCHEMA = """
CREATE TABLE IF NOT EXISTS payouts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           REAL NOT NULL,
    destination  TEXT NOT NULL,
    amount_msat  INTEGER NOT NULL,
    payment_hash TEXT NOT NULL,
    status       TEXT NOT NULL,          -- paying | paid | failed
    fee_msat     INTEGER,
    preimage     TEXT,
    error        TEXT,
    balance_before_msat INTEGER
);
CREATE INDEX IF NOT EXISTS payouts_hash ON payouts(payment_hash);
"""


@dataclass(slots=True)
class Payout:
    id: int
    at: float
    destination: str
    amount_msat: int
    payment_hash: str
    status: str
    fee_msat: int | None
    preimage: str | None
    error: str | None
    balance_before_msat: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PayoutHistory:
    """The payouts ledger (SQLite, WAL, 0600), written before each payment."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else db_path("payouts")
        try:
            self._db = sqlite3.connect(private_file(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the payouts history {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "PayoutHistory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def already_paid(self, payment_hash: str) -> bool:
        row = self._db.execute("SELECT 1 FROM payouts WHERE payment_hash = ? AND status IN ('paid', 'paying')",
                               (payment_hash.lower(),)).fetchone()
        return row is not None

    def start(self, destination: str, amount_msat: int, payment_hash: str, balance_msat: int) -> int:
        cur = self._db.execute(
            "INSERT INTO payouts(at, destination, amount_msat, payment_hash, status, balance_before_msat)"
            " VALUES (?,?,?,?,'paying',?)", (time.time(), destination, amount_msat, payment_hash.lower(), balance_msat))
        return int(cur.lastrowid or 0)

    def finish(self, payout_id: int, *, fee_msat: int | None = None, preimage: str | None = None,
               error: str | None = None) -> None:
        self._db.execute("UPDATE payouts SET status = ?, fee_msat = ?, preimage = ?, error = ? WHERE id = ?",
                         ("failed" if error else "paid", fee_msat, preimage, error, payout_id))

    def list(self, limit: int | None = 50) -> list[Payout]:
        sql = ("SELECT id, at, destination, amount_msat, payment_hash, status, fee_msat, preimage, error,"
               " balance_before_msat FROM payouts ORDER BY id DESC" + (" LIMIT ?" if limit else ""))
        return [Payout(*r) for r in self._db.execute(sql, (limit,) if limit else ())]


def is_lightning_address(value: str) -> bool:
    name, at, domain = value.partition("@")
    return bool(at and name and "." in domain or at and domain.split(":")[0] in ("localhost", "127.0.0.1"))


def lnurlp_url(address: str) -> str:
    """user@domain -> https://domain/.well-known/lnurlp/user (http only for local hosts, for tests)."""
    name, _, domain = address.partition("@")
    host = domain.split(":")[0].lower()
    local = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".local")
    return f"{'http' if local else 'https'}://{domain}/.well-known/lnurlp/{name}"


async def invoice_from_address(address: str, amount_msat: int, *, timeout: float = 15.0) -> str:
    """Ask a Lightning address's LNURL-pay service (LUD-06/16) for an invoice of `amount_msat`."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        try:
            meta = (await http.get(lnurlp_url(address))).json()
        except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
            raise PaymentError(f"the Lightning address {address} did not answer: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("tag") != "payRequest" or not isinstance(meta.get("callback"), str):
            raise PaymentError(f"{address} is not a Lightning address (no LNURL-pay service): {str(meta)[:200]}")
        low, high = int(meta.get("minSendable", 0)), int(meta.get("maxSendable", 0))
        if not low <= amount_msat <= high:
            raise PaymentError(f"{address} takes {low}..{high} msat per payment; the sweep is {amount_msat} msat",
                               hint="use --keep to leave more behind, or sweep to an invoice")
        callback = meta["callback"]
        if urlsplit(callback).scheme not in ("https", "http"):
            raise PaymentError(f"{address} gave a callback that is not a web URL")
        try:
            answer = (await http.get(callback, params={"amount": str(amount_msat)})).json()
        except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
            raise PaymentError(f"the Lightning address {address} gave no invoice: {exc}") from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("pr"), str):
        raise PaymentError(f"the Lightning address {address} refused: {str(answer.get('reason', answer))[:200]}"
                           if isinstance(answer, dict) else f"the Lightning address {address} gave no invoice")
    return answer["pr"]


@dataclass(slots=True)
class SweepPlan:
    destination: str
    balance_msat: int
    keep_msat: int
    amount_msat: int
    bolt11: str | None  # None until asked (address) or for a dry run of an address


async def sweep(wallet: Any, to: str, *, keep_msat: int, fee_budget_msat: int = DEFAULT_FEE_BUDGET_MSAT,
                dry_run: bool = False, history: PayoutHistory | None = None) -> tuple[SweepPlan, Payout | None]:
    """Pay everything above `keep_msat` (less the fee budget) to `to`; see the module docstring."""
    from wallet.bolt11_codec import decode_bolt11
    from wallet.errors import InvoiceInvalid, WalletTimeout

    if keep_msat < 0 or fee_budget_msat < 0:
        raise ConfigError("--keep and --max-fee-msat are amounts in msat, 0 or more")
    balance = int(await wallet.balance())
    address = is_lightning_address(to)
    if address:
        amount = balance - keep_msat - fee_budget_msat
        amount -= amount % 1000  # whole sats: every Lightning address takes them
        if amount <= 0:
            raise PaymentError(f"nothing to sweep: balance {balance} msat, keep {keep_msat} + fees {fee_budget_msat}")
        bolt11 = None if dry_run else await invoice_from_address(to, amount)
        destination = to
    else:
        try:
            decoded = decode_bolt11(to)
        except InvoiceInvalid as exc:
            raise ConfigError(f"--to takes a BOLT11 invoice or a Lightning address (user@domain): {exc}") from None
        if decoded.amount_msat is None:
            raise ConfigError("--to: the invoice has no amount; make one for the sum to sweep, or use a Lightning address")
        amount, bolt11 = int(decoded.amount_msat), decoded.bolt11
        destination = f"invoice {decoded.payment_hash[:16]}…"
        with PayoutHistory(history.path if history is not None else None) as seen:
            if seen.already_paid(decoded.payment_hash):
                raise PaymentError("this invoice was already paid by a sweep; not paid again")
        if amount + keep_msat + fee_budget_msat > balance:
            raise PaymentError(f"the invoice asks {amount} msat; the balance {balance} msat minus --keep {keep_msat} "
                               f"and fees {fee_budget_msat} does not cover it", hint="make a smaller invoice")
    plan = SweepPlan(destination, balance, keep_msat, amount, bolt11)
    if dry_run or bolt11 is None:
        return plan, None
    decoded = decode_bolt11(bolt11)
    if decoded.amount_msat != amount:
        raise PaymentError(f"the invoice is for {decoded.amount_msat} msat, not the {amount} msat asked; not paid")
    if decoded.expires_at <= time.time():
        raise PaymentError("the invoice has expired; not paid")
    network = getattr(wallet, "network", None)
    if network and decoded.network and decoded.network != network:
        raise PaymentError(f"the invoice is for {decoded.network}, the wallet is on {network}; not paid")
    own = history is None
    hist = history or PayoutHistory()
    try:
        if hist.already_paid(decoded.payment_hash):
            raise PaymentError("this invoice was already paid by a sweep; not paid again")
        payout_id = hist.start(destination, amount, decoded.payment_hash, balance)
        try:
            payment = await wallet.pay_invoice(bolt11, max_msat=amount)
        except WalletTimeout:  # the outcome is unknown: it stays `paying`, so it is never paid again
            raise
        except Exception as exc:
            hist.finish(payout_id, error=f"{type(exc).__name__}: {exc}"[:300])
            raise
        hist.finish(payout_id, fee_msat=payment.fee_msat, preimage=payment.preimage)
        return plan, hist.list(1)[0]
    finally:
        if own:
            hist.close()
