"""The development wallet: accounts in one SQLite ledger shared by every process of a local setup.

URI: `dev:///<absolute path to ledger.sqlite>?account=<name>` (the file and the account are
created on first use). It behaves like a tiny Lightning node with custodial accounts (like
LNbits): invoices are real BOLT11 strings on regtest (`lnbcrt…`), signed with a node key kept in
the ledger, with a random preimage whose sha256 is the payment hash. Paying is one
`BEGIN IMMEDIATE` transaction that checks the invoice (issued here, not expired, not paid,
amount <= max_msat, balance) and moves the money, so concurrent payers in several processes
can never double-spend or pay an invoice twice. Fees are 0. Only invoices issued by the same
ledger can be paid — there is no network behind it.

Where the calls run. Each ledger operation is a few reads and at most one short write
transaction, tens of microseconds of SQLite with `synchronous=NORMAL` (no fsync per commit).
`DevWallet` runs it on the event loop when the ledger is free at that instant, and on a worker
thread only when it is not (another thread or process is writing): a hop to a thread and back
cost ~0.8 ms of CPU per call under load (GIL hand-overs), three calls per paid job, far more
than the work itself. The fast path never waits: it takes the locks without blocking and
begins with SQLite's busy timeout at 0, and gives up (`LedgerBusy`) before anything is written,
so the same call simply runs again on the thread. Durability: WAL with `synchronous=NORMAL`
keeps every committed payment through a crash or kill of any process; only a power loss or OS
crash can undo the last commits. That is the right trade for a development wallet, whose
money is not real; real money goes through NWC or LNbits.

Hold invoices (NIP-47 `make_hold_invoice`, what pay-for-the-key uses over NWC): the payee
names the payment hash and the ledger never learns the preimage until the payee settles. A
payment to one is *locked*: the payer's balance is debited and the invoice turns `accepted`
(the payer's `pay_invoice` keeps waiting, as a Lightning payment to a held HTLC does); then
either `settle_hold_invoice(preimage)` credits the payee and hands the preimage to the payer,
or `cancel_hold_invoice` (or the settle deadline, `hold_settle_s` after the lock, checked by
whoever looks next) gives the money back and the payer's call fails. Each step is one
transaction, so money is always in exactly one place: the payer, the hold, or the payee.

Settlement is event-driven (`DevWallet.wait_invoice`): a payee waiting for its invoices has
one watcher per wallet instead of one poller per invoice. The watcher reads
`PRAGMA data_version` (a counter of commits by other connections, answered from shared
memory) when woken, and looks at the waited invoices only when it moved. A payment made by a
DevLedger of the same process wakes it at once; one made by another process rings the
ledger's doorbell (wallet.doorbell, a Unix datagram per waiting process), and where there is
no doorbell the watcher wakes every `WATCH_TICK_S` (with one, every `WATCH_TICK_RUNG_S`, for
a lost ring). Its private read connection has
no busy timeout and never writes, so these microsecond reads run on the event loop and skip
a tick rather than wait when SQLite is busy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

from pylon.errors import ConfigError
from pylon.storage import Lock, WriteTransaction, private_db_file
from wallet.base import MAX_AMOUNT_MSAT, Invoice, InvoiceState, Payment, Received
from wallet.bolt11_codec import MAX_BOLT11_LEN, decode_bolt11, encode_bolt11
from wallet.doorbell import Doorbell, Listener
from wallet.errors import (
    AlreadyPaid,
    AmountAboveMax,
    InsufficientBalance,
    InvoiceExpired,
    InvoiceInvalid,
    InvoiceNotFound,
    PaymentFailed,
    WalletError,
    WalletUnreachable,
    WalletUriInvalid,
)
from wallet.uri import query_params

log = logging.getLogger(__name__)
T = TypeVar("T")

NETWORK = "regtest"
BUSY_TIMEOUT_MS = 15_000
MAX_EXPIRY_S = 31 * 24 * 3600
_PAID_ONCE = "an invoice is paid once; nothing moved this time (ask the payee for a new invoice)"
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
WATCH_TICK_S = 0.005  # how often a waiting payee checks for payments made by other processes
WATCH_TICK_RUNG_S = 0.05  # the same with a doorbell (wallet.doorbell): only a lost ring waits for it
WATCH_LINGER_S = 2.0  # a watcher with no waiters keeps its read connection and doorbell this long
_WATCH_CHUNK = 500    # hashes per IN (...) query
HOLD_SETTLE_S = 600.0  # a locked hold payment not settled this long after the lock is refunded
_HOLD_COLUMNS = (("hold", "INTEGER NOT NULL DEFAULT 0"), ("held_by", "TEXT"), ("accepted_at", "REAL"),
                 ("settle_deadline", "REAL"))

# same-process wake-ups: resolved ledger path -> watchers waiting on that ledger
_watchers: dict[str, set["_SettleWatcher"]] = {}
_watchers_lock = threading.Lock()
_doorbells: dict[str, Doorbell] = {}  # other processes' wake-ups, by resolved ledger path


def _doorbell(key: str) -> Doorbell:
    bell = _doorbells.get(key)
    if bell is None:
        with _watchers_lock:
            bell = _doorbells.setdefault(key, Doorbell(key))
    return bell


_path_locks: dict[str, threading.Lock] = {}


def _path_write_lock(key: str) -> threading.Lock:
    """One lock per ledger file per process: this process's writers queue on it instead of
    meeting in SQLite's busy handler, which sleeps in steps of up to 100 ms."""
    with _watchers_lock:
        return _path_locks.setdefault(key, threading.Lock())


def _notify_settled(key: str) -> None:
    """A payment committed in this process: wake every watcher of that ledger file, in this
    process and (the doorbell) in the others."""
    with _watchers_lock:
        targets = list(_watchers.get(key, ()))
    for w in targets:
        w.poke_threadsafe()
    _doorbell(key).ring()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    balance_msat INTEGER NOT NULL DEFAULT 0 CHECK (balance_msat >= 0),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS invoices (
    payment_hash TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts(name),
    bolt11 TEXT NOT NULL,
    amount_msat INTEGER NOT NULL,
    memo TEXT NOT NULL DEFAULT '',
    preimage TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- 'pending' | 'accepted' (hold, money locked) | 'settled' | 'cancelled'
    settled_at REAL,
    paid_by TEXT,
    hold INTEGER NOT NULL DEFAULT 0,         -- 1: a hold invoice (preimage '' until settled)
    held_by TEXT,                            -- hold invoices: the payer whose money is locked
    accepted_at REAL,
    settle_deadline REAL                     -- hold invoices: refunded if not settled by then
);
CREATE TABLE IF NOT EXISTS payments (
    payment_hash TEXT PRIMARY KEY,           -- an invoice is paid at most once in this ledger
    payer TEXT NOT NULL REFERENCES accounts(name),
    payee TEXT NOT NULL REFERENCES accounts(name),
    amount_msat INTEGER NOT NULL,
    fee_msat INTEGER NOT NULL DEFAULT 0,
    preimage TEXT NOT NULL,
    paid_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fundings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL REFERENCES accounts(name),
    amount_msat INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_by_payer ON payments(payer);
CREATE INDEX IF NOT EXISTS invoices_by_bolt11 ON invoices(bolt11);
"""


def _check_account(name: str) -> str:
    if not isinstance(name, str) or not _ACCOUNT_RE.match(name):
        raise WalletUriInvalid("dev wallet account names are 1-64 characters of letters, digits, '_', '-', '.'")
    return name


def _state_of(state: str, expires_at: float, now: float) -> InvoiceState:
    """An invoice row's state as the Wallet protocol names it."""
    if state == "settled":
        return InvoiceState.SETTLED
    if state == "accepted":
        return InvoiceState.ACCEPTED
    if state == "cancelled":
        return InvoiceState.FAILED
    return InvoiceState.EXPIRED if now >= expires_at else InvoiceState.PENDING


@dataclass(frozen=True, slots=True)
class HeldPayment:
    """A payment to a hold invoice, locked and waiting for the payee to settle or cancel."""

    payment_hash: str
    amount_msat: int
    settle_deadline: float


def _plain_bolt11(bolt11: Any) -> str | None:
    """The invoice text as this ledger stores it (no `lightning:` prefix, lower case); None
    for anything that cannot be one."""
    if not isinstance(bolt11, str) or len(bolt11) > MAX_BOLT11_LEN:
        return None
    text = bolt11.strip().lower()
    return text[len("lightning:"):] if text.startswith("lightning:") else text


def _check_hash(payment_hash: str) -> str:
    if not isinstance(payment_hash, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", payment_hash):
        raise InvoiceInvalid("payment hash must be 64 hex characters")
    return payment_hash.lower()


class LedgerBusy(Exception):
    """The ledger is being written by another thread or process at this instant (`run_now`
    does not wait for it; nothing was written)."""


class _NoWaitTransaction(WriteTransaction):
    """`WriteTransaction` for `DevLedger.run_now`: takes the locks without blocking and begins
    with SQLite's busy timeout at 0, raising LedgerBusy instead of waiting for either (the
    commit and the release are WriteTransaction's)."""

    __slots__ = ()

    def __enter__(self) -> sqlite3.Connection:
        taken: list[Lock] = []
        try:
            for lock in self._locks:
                if not lock.acquire(blocking=False):
                    raise LedgerBusy
                taken.append(lock)
            self._db.execute("PRAGMA busy_timeout=0")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise LedgerBusy from None
                raise
            finally:
                self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return self._db


class DevLedger:
    """One ledger file: accounts, invoices, payments and the node key. Thread-safe.

    Every process opens its own DevLedger on the same file; SQLite (WAL, BEGIN IMMEDIATE,
    busy_timeout) serialises the writers."""

    def __init__(self, path: str | Path, *, hold_settle_s: float = HOLD_SETTLE_S):
        self.path = Path(path).expanduser()
        self.hold_settle_s = hold_settle_s  # set by the payer's process when it locks a hold payment
        self.key = str(self.path.resolve())
        self._wlock = _path_write_lock(self.key)
        if not self.path.parent.is_dir():  # never create folders from a URI: a typo would go unnoticed
            raise ConfigError(f"dev wallet folder {self.path.parent} does not exist",
                              hint="create it first, or point the dev:// URI at a file in an existing folder")
        try:
            private_db_file(self.path)  # 0600: it holds balances and the node secret
            self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # the module doc: durable across crashes, not power loss
            self._db.execute("PRAGMA foreign_keys=ON")
            self._lock = threading.Lock()
            self._now_only = threading.local()  # .on: this thread is in run_now (never wait)
            with self._lock:
                self._db.executescript(_SCHEMA)
                have = {row[1] for row in self._db.execute("PRAGMA table_info(invoices)")}
            for name, decl in _HOLD_COLUMNS:
                if name not in have:  # a ledger from before hold invoices
                    with self._tx() as db:
                        if name not in {row[1] for row in db.execute("PRAGMA table_info(invoices)")}:
                            db.execute(f"ALTER TABLE invoices ADD COLUMN {name} {decl}")
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('node_secret', ?)",
                           (secrets.token_bytes(32).hex(),))
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('network', ?)", (NETWORK,))
                self._node_secret = db.execute("SELECT value FROM meta WHERE key='node_secret'").fetchone()[0]
        except sqlite3.Error as exc:
            raise WalletUnreachable(f"cannot open dev ledger {self.path}: {exc}") from None
        from coincurve import PrivateKey

        self.node_pubkey: str = PrivateKey(bytes.fromhex(self._node_secret)).public_key.format().hex()

    # -- transactions ---------------------------------------------------------------------
    def _tx(self) -> WriteTransaction:
        """A write transaction holding the ledger's write lock from the start (no upgrade deadlocks)."""
        if getattr(self._now_only, "on", False):
            return _NoWaitTransaction(self._db, self._wlock, self._lock)
        return WriteTransaction(self._db, self._wlock, self._lock)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self._lock.acquire(blocking=not getattr(self._now_only, "on", False)):
            raise LedgerBusy
        try:
            return self._db.execute(sql, args).fetchall()
        finally:
            self._lock.release()

    def run_now(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` (one of this ledger's methods) on this thread, without ever waiting for
        a lock: LedgerBusy when the ledger is in use this instant, raised before `fn` wrote
        anything (each method reads, then writes in at most one transaction, its last step),
        so the caller can run the same call again where it may wait."""
        self._now_only.on = True
        try:
            return fn(*args)
        finally:
            self._now_only.on = False

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- accounts -------------------------------------------------------------------------
    def ensure_account(self, name: str) -> None:
        _check_account(name)
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO accounts(name, balance_msat, created_at) VALUES (?, 0, ?)",
                       (name, int(time.time())))

    def fund(self, account: str, amount_msat: int) -> int:
        """Credit `amount_msat` to `account` (created if missing); returns the new balance."""
        _check_account(account)
        if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or not 0 < amount_msat <= MAX_AMOUNT_MSAT:
            raise WalletError(f"fund amount must be an integer number of millisats from 1 to {MAX_AMOUNT_MSAT:,}"
                              " (21 million bitcoin)")
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO accounts(name, balance_msat, created_at) VALUES (?, 0, ?)",
                       (account, int(time.time())))
            db.execute("UPDATE accounts SET balance_msat = balance_msat + ? WHERE name = ?", (amount_msat, account))
            db.execute("INSERT INTO fundings(account, amount_msat, at) VALUES (?, ?, ?)", (account, amount_msat, time.time()))
            return int(db.execute("SELECT balance_msat FROM accounts WHERE name = ?", (account,)).fetchone()[0])

    def balance(self, account: str) -> int:
        rows = self._read("SELECT balance_msat FROM accounts WHERE name = ?", (account,))
        return rows[0][0] if rows else 0

    def accounts(self) -> dict[str, int]:
        return dict(self._read("SELECT name, balance_msat FROM accounts ORDER BY name"))

    # -- invoices -------------------------------------------------------------------------
    def make_invoice(self, account: str, amount_msat: int, memo: str, expiry_s: int,
                     preimage_hex: str | None = None) -> Invoice:
        """Issue an invoice; `preimage_hex` (32 bytes, hex) is the caller's chosen preimage, else random
        (pay-for-the-key delivery: the payment hash is sha256 of the key to a published result)."""
        if preimage_hex is None:
            preimage = secrets.token_bytes(32)
        else:
            try:
                preimage = bytes.fromhex(preimage_hex)
            except ValueError:
                raise InvoiceInvalid("preimage must be 32 bytes of hex") from None
            if len(preimage) != 32:
                raise InvoiceInvalid("preimage must be 32 bytes of hex")
        return self._issue(account, amount_msat, memo, expiry_s, hashlib.sha256(preimage).hexdigest(),
                           preimage.hex(), hold=False)

    def make_hold_invoice(self, account: str, amount_msat: int, payment_hash: str, memo: str,
                          expiry_s: int) -> Invoice:
        """Issue a hold invoice for a payment hash the caller chose; the ledger never sees the
        preimage before `settle_hold`. A payment to it is locked, not settled (module doc)."""
        return self._issue(account, amount_msat, memo, expiry_s, _check_hash(payment_hash), "", hold=True)

    def _issue(self, account: str, amount_msat: int, memo: str, expiry_s: int, payment_hash: str,
               preimage_hex: str, *, hold: bool) -> Invoice:
        if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or not 0 < amount_msat <= MAX_AMOUNT_MSAT:
            raise InvoiceInvalid("invoice amount must be a positive integer number of millisats")
        if not isinstance(expiry_s, int) or not 0 < expiry_s <= MAX_EXPIRY_S:
            raise InvoiceInvalid(f"invoice expiry must be 1..{MAX_EXPIRY_S} seconds")
        memo = str(memo or "")
        if len(memo.encode()) > 639:  # BOLT11 'd' field limit
            raise InvoiceInvalid("invoice memo must be at most 639 bytes")
        created = int(time.time())
        text = encode_bolt11(node_secret_hex=self._node_secret, network=NETWORK, amount_msat=amount_msat,
                             payment_hash=payment_hash, payment_secret=secrets.token_bytes(32).hex(),
                             memo=memo, expiry_s=expiry_s, created_at=created)
        try:
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO accounts(name, balance_msat, created_at) VALUES (?, 0, ?)",
                           (account, created))
                db.execute(
                    "INSERT INTO invoices(payment_hash, account, bolt11, amount_msat, memo, preimage, created_at,"
                    " expires_at, hold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (payment_hash, account, text, amount_msat, memo, preimage_hex, created, created + expiry_s,
                     int(hold)))
        except sqlite3.IntegrityError:
            raise InvoiceInvalid("this ledger already issued an invoice for that payment hash") from None
        return Invoice(bolt11=text, payment_hash=payment_hash, amount_msat=amount_msat, expires_at=created + expiry_s)

    def pay_invoice(self, account: str, bolt11: str, max_msat: int, now: float | None = None) -> Payment:
        """Check and settle in one transaction; raises a typed error and moves nothing otherwise.

        A hold invoice's payment is locked and this call blocks (polling) until the payee
        settles or cancels it: for synchronous callers; `DevWallet.pay_invoice` waits without
        holding a thread."""
        started = self.begin_payment(account, bolt11, max_msat, now)
        while isinstance(started, HeldPayment):
            time.sleep(0.05)
            outcome = self.held_outcome(account, started)
            if outcome is not None:
                return outcome
        return started

    def begin_payment(self, account: str, bolt11: str, max_msat: int,
                      now: float | None = None) -> Payment | HeldPayment:
        """Pay in one transaction: settled (a Payment), or, for a hold invoice, locked (a
        HeldPayment: the payer's money is debited and held for the payee). Raises a typed
        error and moves nothing otherwise.

        An invoice this ledger issued is found by its exact text, and its stored row answers
        for it: it was valid when we signed it, so it is not decoded again (~0.2 ms of
        signature recovery per payment). Any other string is decoded for a precise refusal."""
        if not isinstance(max_msat, int) or isinstance(max_msat, bool) or max_msat < 0:
            raise PaymentFailed("max_msat must be a non-negative integer")
        text = _plain_bolt11(bolt11)
        with self._tx() as db:
            row = None if text is None else db.execute(
                "SELECT payment_hash, account, amount_msat, preimage, expires_at, state, paid_by, hold, held_by"
                " FROM invoices WHERE bolt11 = ?", (text,)).fetchone()
            if row is None:
                self._refuse_foreign(db, bolt11, max_msat)
            payment_hash, payee, amount, preimage, expires_at, state, paid_by, hold, held_by = row
            if amount > max_msat:
                raise AmountAboveMax(f"invoice asks {amount} msat, above the allowed {max_msat} msat")
            if state == "settled":
                raise AlreadyPaid(f"invoice already paid{' by this account' if paid_by == account else ''}",
                                  hint=_PAID_ONCE)
            if state == "accepted":
                raise AlreadyPaid(f"invoice already paid{' by this account' if held_by == account else ''}"
                                  " (held until the payee settles it)", hint=_PAID_ONCE)
            if state == "cancelled":
                raise PaymentFailed("the payee cancelled this invoice; ask for a new one")
            t = time.time() if now is None else now
            if t >= expires_at:
                raise InvoiceExpired("invoice expired; ask the payee for a new one")
            if payee == account:
                raise PaymentFailed("an account cannot pay its own invoice")
            bal = db.execute("SELECT balance_msat FROM accounts WHERE name = ?", (account,)).fetchone()
            if bal is None or bal[0] < amount:
                raise InsufficientBalance(
                    f"balance {bal[0] if bal else 0} msat is below the invoice amount {amount} msat"
                    " (fund it with `pylon wallet fund`)")
            db.execute("UPDATE accounts SET balance_msat = balance_msat - ? WHERE name = ?", (amount, account))
            if hold:  # locked: the payee gets it when it settles with the preimage, the payer if it cancels
                deadline = t + self.hold_settle_s
                db.execute("UPDATE invoices SET state = 'accepted', held_by = ?, accepted_at = ?, settle_deadline = ?"
                           " WHERE payment_hash = ?", (account, t, deadline, payment_hash))
            else:
                db.execute("UPDATE accounts SET balance_msat = balance_msat + ? WHERE name = ?", (amount, payee))
                db.execute("UPDATE invoices SET state = 'settled', settled_at = ?, paid_by = ? WHERE payment_hash = ?",
                           (t, account, payment_hash))
                db.execute("INSERT INTO payments(payment_hash, payer, payee, amount_msat, fee_msat, preimage, paid_at)"
                           " VALUES (?, ?, ?, ?, 0, ?, ?)", (payment_hash, account, payee, amount, preimage, t))
        _notify_settled(self.key)
        if hold:
            log.debug("dev wallet: %s locked %s msat for hold invoice %s", account, amount, payment_hash[:12])
            return HeldPayment(payment_hash, amount, deadline)
        log.debug("dev wallet: %s paid %s msat for %s", account, amount, payment_hash[:12])
        return Payment(preimage=preimage, fee_msat=0, payment_hash=payment_hash, amount_msat=amount)

    @staticmethod
    def _refuse_foreign(db: sqlite3.Connection, bolt11: Any, max_msat: int) -> NoReturn:
        """Why a string this ledger did not issue cannot be paid (always raises)."""
        decoded = decode_bolt11(bolt11)  # InvoiceInvalid for anything that is not an invoice
        if decoded.network != NETWORK:
            raise PaymentFailed(f"the dev wallet pays regtest invoices only, this one is for {decoded.network}")
        if decoded.amount_msat is None:
            raise InvoiceInvalid("amountless invoices are not supported")
        if decoded.amount_msat > max_msat:
            raise AmountAboveMax(f"invoice asks {decoded.amount_msat} msat, above the allowed {max_msat} msat")
        if db.execute("SELECT 1 FROM invoices WHERE payment_hash = ?", (decoded.payment_hash,)).fetchone():
            raise PaymentFailed("invoice does not match the one issued for this payment hash")
        raise PaymentFailed("no route: the dev wallet can only pay invoices issued by the same dev ledger")

    def lookup_invoice(self, account: str, payment_hash: str, now: float | None = None) -> InvoiceState:
        ph = _check_hash(payment_hash)
        rows = self._read("SELECT state, expires_at, settle_deadline FROM invoices WHERE payment_hash = ? AND account = ?",
                          (ph, account))
        if not rows:
            raise InvoiceNotFound(f"no invoice {ph[:16]}… issued by this account")
        state, expires_at, deadline = rows[0]
        t = time.time() if now is None else now
        if state == "accepted" and deadline is not None and t > deadline and self.cancel_overdue(ph, t):
            return InvoiceState.FAILED
        return _state_of(state, expires_at, t)

    # -- hold invoices --------------------------------------------------------------------
    def settle_hold(self, account: str, preimage_hex: str, now: float | None = None) -> None:
        """The payee reveals the preimage: the locked money is credited to it and the payer's
        payment completes with that preimage. Settling twice is a no-op."""
        try:
            preimage = bytes.fromhex(preimage_hex)
        except (TypeError, ValueError):
            raise InvoiceInvalid("preimage must be 32 bytes of hex") from None
        if len(preimage) != 32:
            raise InvoiceInvalid("preimage must be 32 bytes of hex")
        ph = hashlib.sha256(preimage).hexdigest()
        t = time.time() if now is None else now
        overdue = False
        with self._tx() as db:
            row = db.execute("SELECT account, amount_msat, state, held_by, settle_deadline FROM invoices"
                             " WHERE payment_hash = ? AND hold = 1", (ph,)).fetchone()
            if row is None or row[0] != account:
                raise InvoiceNotFound(f"no hold invoice {ph[:16]}… issued by this account")
            _, amount, state, payer, deadline = row
            if state == "settled":
                return
            if state == "cancelled":
                raise PaymentFailed("the hold invoice was cancelled (its payer was refunded): nothing to settle")
            if state != "accepted":
                raise PaymentFailed("no payment is held for this hold invoice yet")
            if deadline is not None and t > deadline:
                self._refund_hold(db, ph, payer, amount)
                overdue = True
            else:
                db.execute("UPDATE accounts SET balance_msat = balance_msat + ? WHERE name = ?", (amount, account))
                db.execute("UPDATE invoices SET state = 'settled', preimage = ?, settled_at = ?, paid_by = ?"
                           " WHERE payment_hash = ?", (preimage.hex(), t, payer, ph))
                db.execute("INSERT INTO payments(payment_hash, payer, payee, amount_msat, fee_msat, preimage, paid_at)"
                           " VALUES (?, ?, ?, ?, 0, ?, ?)", (ph, payer, account, amount, preimage.hex(), t))
        _notify_settled(self.key)
        if overdue:
            raise PaymentFailed("the held payment was not settled before its deadline and went back to the payer")

    def cancel_hold(self, account: str, payment_hash: str) -> None:
        """The payee gives up: a locked payment goes back to the payer; an unpaid hold invoice
        can no longer be paid. Cancelling twice is a no-op; a settled one cannot be cancelled."""
        ph = _check_hash(payment_hash)
        with self._tx() as db:
            row = db.execute("SELECT account, amount_msat, state, held_by FROM invoices"
                             " WHERE payment_hash = ? AND hold = 1", (ph,)).fetchone()
            if row is None or row[0] != account:
                raise InvoiceNotFound(f"no hold invoice {ph[:16]}… issued by this account")
            _, amount, state, payer = row
            if state == "settled":
                raise AlreadyPaid("the hold invoice is settled already; it cannot be cancelled")
            if state == "accepted":
                self._refund_hold(db, ph, payer, amount)
            elif state == "pending":
                db.execute("UPDATE invoices SET state = 'cancelled' WHERE payment_hash = ?", (ph,))
        _notify_settled(self.key)

    def cancel_overdue(self, payment_hash: str, now: float | None = None) -> bool:
        """Refund a locked payment whose settle deadline has passed; True if this call did."""
        t = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT amount_msat, held_by FROM invoices WHERE payment_hash = ? AND hold = 1"
                             " AND state = 'accepted' AND settle_deadline < ?", (payment_hash, t)).fetchone()
            if row is None:
                return False
            self._refund_hold(db, payment_hash, row[1], row[0])
        _notify_settled(self.key)
        log.info("dev wallet: hold payment %s not settled in time; refunded", payment_hash[:12])
        return True

    @staticmethod
    def _refund_hold(db: sqlite3.Connection, payment_hash: str, payer: str, amount: int) -> None:
        db.execute("UPDATE accounts SET balance_msat = balance_msat + ? WHERE name = ?", (amount, payer))
        db.execute("UPDATE invoices SET state = 'cancelled' WHERE payment_hash = ?", (payment_hash,))

    def held_outcome(self, account: str, held: HeldPayment, now: float | None = None) -> Payment | None:
        """Where `account`'s locked payment stands: its Payment once settled, None while still
        held; PaymentFailed once cancelled or refunded (past the settle deadline)."""
        details = self.payment_details(account, held.payment_hash)
        if details is not None:
            return details
        rows = self._read("SELECT state, held_by FROM invoices WHERE payment_hash = ?", (held.payment_hash,))
        if not rows or rows[0][1] != account or rows[0][0] == "cancelled":
            raise PaymentFailed("the payee cancelled the hold invoice; the payment went back to this wallet")
        if rows[0][0] == "accepted" and (time.time() if now is None else now) > held.settle_deadline:
            self.cancel_overdue(held.payment_hash, now)
            raise PaymentFailed("the payee did not settle the held payment in time; it went back to this wallet")
        return None

    def payment_state(self, account: str, payment_hash: str) -> InvoiceState:
        """lookup_payment: SETTLED (paid), PENDING (locked in a hold invoice), FAILED (no payment)."""
        ph = _check_hash(payment_hash)
        if self.payment_details(account, ph) is not None:
            return InvoiceState.SETTLED
        rows = self._read("SELECT settle_deadline FROM invoices WHERE payment_hash = ? AND held_by = ?"
                          " AND state = 'accepted'", (ph, account))
        if not rows:
            return InvoiceState.FAILED
        if rows[0][0] is not None and time.time() > rows[0][0] and self.cancel_overdue(ph):
            return InvoiceState.FAILED
        return InvoiceState.PENDING

    def payment_details(self, account: str, payment_hash: str) -> Payment | None:
        ph = _check_hash(payment_hash)
        rows = self._read("SELECT preimage, fee_msat, amount_msat FROM payments WHERE payment_hash = ? AND payer = ?",
                          (ph, account))
        if not rows:
            return None
        preimage, fee, amount = rows[0]
        return Payment(preimage=preimage, fee_msat=fee, payment_hash=ph, amount_msat=amount)

    def received(self, account: str, payment_hash: str) -> Received | None:
        """`account`'s settled invoice with that hash (a hold invoice's preimage is known from its settle)."""
        ph = _check_hash(payment_hash)
        rows = self._read("SELECT preimage, amount_msat, settled_at FROM invoices"
                          " WHERE payment_hash = ? AND account = ? AND state = 'settled'", (ph, account))
        if not rows or not rows[0][0]:
            return None
        preimage, amount, settled_at = rows[0]
        return Received(payment_hash=ph, preimage=preimage, amount_msat=amount, settled_at=int(settled_at))


class _SettleWatcher:
    """One account's invoices being waited on, checked together (see the module doc): the
    payee's own invoices (`account` set), or, for a payer waiting on held payments, invoices
    of any account (`account` None). Each waiter waits for the state to differ from the one
    it names (PENDING for a payee, ACCEPTED for a payer whose payment is held).

    Lives on one event loop; its read connection is used from that loop's thread only."""

    def __init__(self, ledger: DevLedger, account: str | None) -> None:
        self.ledger = ledger
        self.account = account
        self._waiters: dict[str, list[tuple[InvoiceState, asyncio.Future[InvoiceState]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._db: sqlite3.Connection | None = None
        self._version: int | None = None
        self._fresh = False  # a waiter joined since the last check: check regardless of data_version
        self._listener: Listener | None = None  # rung by other processes' payments (wallet.doorbell)

    def poke_threadsafe(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread
            running = None
        if running is loop:  # the payment ran on this watcher's own loop (DevWallet's fast path)
            wake.set()
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # loop closed
            pass

    async def wait(self, payment_hash: str, timeout: float, leave: InvoiceState = InvoiceState.PENDING) -> InvoiceState:
        """The invoice's state once it is no longer `leave`; `leave` itself on timeout."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new loop (tests): start over on this one
            self._stop_db()
            self._loop, self._wake, self._task = loop, asyncio.Event(), None
        fut: asyncio.Future[InvoiceState] = loop.create_future()
        entry = (leave, fut)
        self._waiters.setdefault(payment_hash, []).append(entry)
        self._fresh = True
        assert self._wake is not None
        self._wake.set()
        if self._task is None or self._task.done():
            with _watchers_lock:
                _watchers.setdefault(self.ledger.key, set()).add(self)
            self._task = loop.create_task(self._run(), name="dev-wallet-settle-watcher")
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for's cancellation races (RelayPool.publish)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            return leave
        finally:
            entries = self._waiters.get(payment_hash)
            if entries is not None:
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    del self._waiters[payment_hash]
            if not self._waiters and self._wake is not None:
                self._wake.set()  # the loop starts lingering (then ends, its doorbell listener with it)

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        # bound before the first check: a payment committed after it rings, one before it is read
        self._listener = _doorbell(self.ledger.key).listen(wake.set)
        tick = WATCH_TICK_S if self._listener is None else WATCH_TICK_RUNG_S
        idle_since: float | None = None
        try:
            while True:
                wake.clear()
                if self._waiters:
                    idle_since = None
                    self._check()
                    wait_s = tick
                else:  # linger: the next invoice (a provider's next job) reuses the connection and listener
                    now = time.monotonic()
                    idle_since = now if idle_since is None else idle_since
                    wait_s = WATCH_LINGER_S - (now - idle_since)
                    if wait_s <= 0:
                        return
                try:
                    async with asyncio.timeout(wait_s):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            with _watchers_lock:
                group = _watchers.get(self.ledger.key)
                if group is not None:
                    group.discard(self)
                    if not group:
                        del _watchers[self.ledger.key]
            self._stop_db()

    def _check(self) -> None:
        try:
            if self._db is None:
                self._db = sqlite3.connect(str(self.ledger.path), timeout=0, isolation_level=None)
                self._db.execute("PRAGMA busy_timeout=0")
                self._db.execute("PRAGMA query_only=ON")
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version and not self._fresh:
                return
            self._fresh = False
            hashes = list(self._waiters)
            now = time.time()
            for i in range(0, len(hashes), _WATCH_CHUNK):
                chunk = hashes[i:i + _WATCH_CHUNK]
                marks = ','.join('?' * len(chunk))
                if self.account is None:
                    rows = self._db.execute(f"SELECT payment_hash, state, expires_at FROM invoices WHERE payment_hash"
                                            f" IN ({marks})", chunk).fetchall()
                else:
                    rows = self._db.execute(
                        f"SELECT payment_hash, state, expires_at FROM invoices WHERE account = ? AND payment_hash IN"
                        f" ({marks})", (self.account, *chunk)).fetchall()
                for ph, state, expires_at in rows:
                    self._resolve(ph, _state_of(state, expires_at, now))
            self._version = version
        except sqlite3.Error as exc:  # busy or briefly unreadable: the next tick tries again
            log.debug("dev wallet watcher: %s", exc)
            self._fresh = True

    def _resolve(self, payment_hash: str, state: InvoiceState) -> None:
        for leave, fut in self._waiters.get(payment_hash, ()):
            if state != leave and not fut.done():
                fut.set_result(state)

    def _stop_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self._db = None
            self._version = None

    async def aclose(self) -> None:
        task = self._task
        for entries in self._waiters.values():
            for _, fut in entries:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._stop_db()


def parse_dev_uri(uri: str) -> tuple[Path, str]:
    """`dev:///abs/path.sqlite?account=name` -> (path, account). Account defaults to "default"."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "dev":
        raise WalletUriInvalid("not a dev:// wallet URI")
    path = unquote(parts.path)
    if parts.netloc and parts.netloc not in ("localhost",):
        # dev://relative/path is a common slip: treat netloc as the first path segment
        path = unquote(parts.netloc) + path
    if not path:
        raise WalletUriInvalid("dev wallet URI needs a ledger path: dev:///abs/path/ledger.sqlite?account=NAME")
    account = query_params(parts.query, ("account",), "a dev wallet URI").get("account", ["default"])[0]
    return Path(path).expanduser(), _check_account(account)


class DevWallet:
    """A `Wallet` that is one account of a `DevLedger`."""

    network = NETWORK

    def __init__(self, path: str | Path, account: str = "default", *, ledger: DevLedger | None = None):
        self.account = _check_account(account)
        self.ledger = ledger or DevLedger(path)
        self.path = self.ledger.path
        self.ledger.ensure_account(self.account)
        self._closed = False
        self._watcher = _SettleWatcher(self.ledger, self.account)
        self._payer_watcher = _SettleWatcher(self.ledger, None)  # our payments held by hold invoices

    @classmethod
    def from_uri(cls, uri: str) -> "DevWallet":
        path, account = parse_dev_uri(uri)
        return cls(path, account)

    @property
    def uri(self) -> str:
        return f"dev://{self.path.resolve()}?account={self.account}"

    @property
    def node_pubkey(self) -> str:
        """Payee pubkey of every invoice this ledger issues (what `check_invoice` may expect)."""
        return self.ledger.node_pubkey

    def __repr__(self) -> str:
        return f"DevWallet(path={str(self.path)!r}, account={self.account!r})"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ledger method: here on the loop when the ledger is free, else on a worker
        thread (the module doc, "Where the calls run")."""
        if self._closed:
            raise WalletError("wallet is closed")
        try:
            try:
                return self.ledger.run_now(fn, *args)
            except LedgerBusy:
                return await asyncio.to_thread(fn, *args)
        except sqlite3.Error as exc:
            raise WalletUnreachable(f"dev ledger {self.path} failed: {exc}") from None

    async def pay_invoice(self, bolt11: str, *, max_msat: int) -> Payment:
        """Pay; for a hold invoice, the money is locked and this waits (as a Lightning payment
        to a held HTLC does) until the payee settles (the preimage comes back) or cancels
        (PaymentFailed, the money is back). Cancelled meanwhile: the payment stays locked and
        `lookup_payment` says PENDING until it is decided."""
        started = await self._call(self.ledger.begin_payment, self.account, bolt11, max_msat)
        while isinstance(started, HeldPayment):
            outcome = await self._call(self.ledger.held_outcome, self.account, started)
            if outcome is not None:
                return outcome
            left = started.settle_deadline - time.time()
            await self._payer_watcher.wait(started.payment_hash, max(min(left + 0.05, 30.0), 0.05),
                                           leave=InvoiceState.ACCEPTED)
        return started

    async def make_invoice(self, amount_msat: int, memo: str = "", expiry_s: int = 600) -> Invoice:
        return await self._call(self.ledger.make_invoice, self.account, amount_msat, memo, expiry_s)

    async def make_invoice_with_preimage(self, amount_msat: int, preimage: str, memo: str = "",
                                         expiry_s: int = 600) -> Invoice:
        """wallet.base.SupportsPreimageInvoice: an invoice whose hash is sha256(preimage)."""
        return await self._call(self.ledger.make_invoice, self.account, amount_msat, memo, expiry_s, preimage)

    async def make_hold_invoice(self, amount_msat: int, payment_hash: str, memo: str = "",
                                expiry_s: int = 600) -> Invoice:
        """wallet.base.SupportsHoldInvoice: an invoice for a hash whose preimage only the caller knows."""
        return await self._call(self.ledger.make_hold_invoice, self.account, amount_msat, payment_hash, memo, expiry_s)

    async def hold_invoices_offered(self) -> bool:
        return True

    async def wait_hold_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
        """Wait until a payment to this hold invoice is locked (ACCEPTED), or it settles, expires
        or is cancelled; PENDING on timeout."""
        return await self.wait_invoice(payment_hash, timeout)

    async def settle_hold_invoice(self, preimage: str) -> None:
        await self._call(self.ledger.settle_hold, self.account, preimage)

    async def cancel_hold_invoice(self, payment_hash: str) -> None:
        await self._call(self.ledger.cancel_hold, self.account, payment_hash)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceState:
        return await self._call(self.ledger.lookup_invoice, self.account, payment_hash)

    async def wait_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
        """Wait up to `timeout` s for an invoice of this account to leave 'pending'; its state then.

        Same states and errors as `lookup_invoice` (InvoiceNotFound for unknown hashes); PENDING
        when the timeout passed first. Many concurrent waits cost one watcher (module doc)."""
        state = await self.lookup_invoice(payment_hash)
        if state != InvoiceState.PENDING or timeout <= 0:
            return state
        if self._closed:
            raise WalletError("wallet is closed")
        return await self._watcher.wait(_check_hash(payment_hash), timeout)

    async def lookup_payment(self, payment_hash: str) -> InvoiceState:
        return await self._call(self.ledger.payment_state, self.account, payment_hash)

    async def payment_details(self, payment_hash: str) -> Payment | None:
        return await self._call(self.ledger.payment_details, self.account, payment_hash)

    async def received_details(self, payment_hash: str) -> Received | None:
        return await self._call(self.ledger.received, self.account, payment_hash)

    async def balance(self) -> int:
        return await self._call(self.ledger.balance, self.account)

    async def fund(self, amount_msat: int) -> int:
        """Credit this account (dev wallets only); returns the new balance."""
        return await self._call(self.ledger.fund, self.account, amount_msat)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._watcher.aclose()
            await self._payer_watcher.aclose()
            self.ledger.close()

    async def __aenter__(self) -> "DevWallet":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def fund(uri_or_path: str | Path, account: str, amount_msat: int) -> int:
    """Credit `account` in the ledger at a dev:// URI or path; returns the new balance."""
    path = parse_dev_uri(str(uri_or_path))[0] if str(uri_or_path).startswith("dev:") else Path(uri_or_path)
    ledger = DevLedger(path)
    try:
        return ledger.fund(account, amount_msat)
    finally:
        ledger.close()

