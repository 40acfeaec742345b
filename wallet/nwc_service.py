"""A NIP-47 wallet service: exposes any `Wallet` to NWC clients over Nostr relays.

    service = NwcService(wallet, ["ws://127.0.0.1:7777"], budget_msat=100_000)
    conn = service.new_connection()          # a fresh client key; conn.uri() holds its secret
    async with service.running():            # publishes the info event, answers requests
        print(conn.uri())

Why it exists: no NIP-47 service is on PyPI; with this a dev or LNbits wallet can stand in for
Alby Hub in demos and tests, and our NWC client can be tested against a real service.

Rules it enforces:
- only connections it issued (their client pubkeys) may use it; any other key gets
  UNAUTHORIZED, at most 10 answers a minute per key and `unauth_per_second` (burst
  `unauth_burst`) over all unknown keys together: 500 fresh keys get at most a burst of
  signed replies, never 500; unknown keys are turned away before any decryption;
- each request is answered once: a rolling replay window by id and created_at
  (wallet.replay.ReplayWindow; requests older than the window are refused);
- each connection has its own spending budget (msat, for the service's lifetime; None =
  unlimited): a payment that would exceed it gets QUOTA_EXCEEDED and is not attempted; the
  amount is reserved before paying, so concurrent requests cannot overspend together;
- requests past their `expiration` tag are ignored; answers mirror the request's encryption
  (NIP-44 v2 when tagged `["encryption","nip44_v2"]`, else NIP-04).
Methods: pay_invoice, make_invoice, lookup_invoice, get_balance, get_info; and, when the
wallet issues hold invoices (`SupportsHoldInvoice.hold_invoices_offered`, the dev wallet does),
make_hold_invoice, settle_hold_invoice, cancel_hold_invoice with the `hold_invoice_accepted`
notification (kind 23197, NIP-44, and its NIP-04 twin 23196) sent to the connection that made
the invoice as soon as a payment to it is locked. An invoice made with make_invoice is watched
(wallet.waiting: the wallet's own wait, else lookups that thin out) and its maker gets
`payment_received` once it is paid, so a client waits for an event instead of asking
lookup_invoice over the relays again and again; at most `MAX_WATCHED_INVOICES` at once (more
are still answered by lookup_invoice), and only its maker hears of it (connections of one
service do not see each other's payments). A hold invoice can be settled or cancelled
only by the connection that made it (while this service runs; after a restart, by any of its
connections: the wallet still checks it is its own invoice). settle/cancel skip the request
semaphore: they are what frees the held payments that may be filling it. Client secrets are
not kept: only their pubkeys (NIP-47: the service must not rely on knowing them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, AsyncIterator, Sequence

from pylon.errors import RelayError
from pylon.nostr.errors import DecryptionError, InvalidKey
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from wallet.base import (
    InvoiceState,
    SupportsHoldInvoice,
    SupportsNodePubkey,
    SupportsPaymentDetails,
    SupportsReceivedDetails,
    Wallet,
)
from wallet.bolt11_codec import decode_bolt11
from wallet.replay import ReplayWindow
from wallet.waiting import wait_for_invoice
from wallet.errors import (
    InvoiceInvalid,
    InvoiceNotFound,
    NotImplementedByWallet,
    QuotaExceeded,
    Unauthorized,
    WalletError,
)
from wallet.nwc_proto import (
    HOLD_ACCEPTED,
    PAYMENT_RECEIVED,
    HOLD_METHODS,
    INFO_KIND,
    LEGACY_NOTIFICATION_KIND,
    NIP04,
    NIP44,
    NOTIFICATION_KIND,
    REQUEST_KIND,
    RESPONSE_KIND,
    ConnectionUri,
    decrypt,
    encrypt,
    error_to_code,
    scheme_of_event_tags,
)

log = logging.getLogger(__name__)

METHODS = ("pay_invoice", "make_invoice", "lookup_invoice", "get_balance", "get_info")
_UNAUTH_WINDOW_S = 60.0
_UNAUTH_REPLIES_PER_WINDOW = 10
_UNAUTH_PER_SECOND = 2.0  # UNAUTHORIZED replies over all unknown keys together
_UNAUTH_BURST = 20
HOLD_WATCH_SLICE_S = 30.0  # a hold invoice's watcher re-asks the wallet at least this often
MAX_WATCHED_INVOICES = 2_000  # invoices watched at once for payment_received (each is one waiting task)
WATCH_POLL_MAX_S = 2.0  # a wallet without its own wait is looked up at most this often per watched invoice


@dataclass
class NwcConnection:
    """One issued connection: its client pubkey, budget and spending so far."""

    client_pubkey: str
    budget_msat: int | None
    name: str = ""
    spent_msat: int = 0
    _secret: str | None = field(default=None, repr=False)  # only until uri() is first built
    _uri: str | None = field(default=None, repr=False)

    def left_msat(self) -> int | None:
        return None if self.budget_msat is None else max(0, self.budget_msat - self.spent_msat)


class NwcService:
    """Serves one `Wallet` over NIP-47 on the given relays."""

    def __init__(self, wallet: Wallet, relays: Sequence[str], keys: Keys | None = None, *,
                 budget_msat: int | None = None, pool: RelayPool | None = None, concurrency: int = 16,
                 send_notifications: bool = True) -> None:
        if not relays and pool is None:
            raise WalletError("an NWC service needs at least one relay")
        self.wallet = wallet
        self.relays = list(pool.urls if pool is not None else relays)
        self.keys = keys or Keys.generate()
        self.default_budget_msat = budget_msat
        self.connections: dict[str, NwcConnection] = {}
        self._pool = pool
        self._own_pool = pool is None
        self._budget_lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unauth_replied: dict[str, list[float]] = {}
        self._replays = ReplayWindow()
        self._unauth_tokens = float(_UNAUTH_BURST)
        self._unauth_stamp = time.monotonic()
        self._issued: dict[str, dict[str, Any]] = {}  # payment_hash -> invoice fields, for lookups
        self._hold_owner: dict[str, str] = {}  # payment_hash -> client pubkey that made the hold invoice
        self._watched: set[str] = set()  # payment hashes of made invoices waited on for payment_received
        self.send_notifications = send_notifications  # False: none (as services older than NIP-47's notifications)
        self.methods: tuple[str, ...] = METHODS  # + HOLD_METHODS once run() found them, + "notifications"
        self.notifications: tuple[str, ...] = ()
        self.ready = asyncio.Event()
        self.stats: dict[str, Any] = {"requests": 0, "unauthorized": 0, "errors": 0, "paid_msat": 0, "by_scheme": {},
                                      "by_method": {}}

    @property
    def pubkey(self) -> str:
        return self.keys.public_key

    # -- connections ---------------------------------------------------------------------------------
    def new_connection(self, *, budget_msat: int | None | EllipsisType = ..., name: str = "") -> NwcConnection:
        """Issue a connection (fresh client key). Its URI (with the secret) is `self.uri_for(conn)`.
        `budget_msat` left out: the service's default; None: no budget."""
        client = Keys.generate()
        budget = self.default_budget_msat if isinstance(budget_msat, EllipsisType) else budget_msat
        conn = NwcConnection(client_pubkey=client.public_key, budget_msat=budget, name=name)
        conn._uri = ConnectionUri(self.pubkey, tuple(self.relays), client.secret_hex).to_uri()
        self.connections[client.public_key] = conn
        return conn

    def add_connection(self, client_pubkey: str, *, budget_msat: int | None = None, name: str = "") -> NwcConnection:
        """Authorise a client key generated elsewhere (its owner builds the URI)."""
        conn = NwcConnection(client_pubkey=client_pubkey.lower(), budget_msat=budget_msat, name=name)
        self.connections[conn.client_pubkey] = conn
        return conn

    def uri_for(self, conn: NwcConnection) -> str:
        """The connection URI (contains the client secret: show it to its user only)."""
        if conn._uri is None:
            raise WalletError("this connection was added by pubkey; its URI is held by its owner")
        return conn._uri

    def revoke(self, client_pubkey: str) -> None:
        self.connections.pop(client_pubkey.lower(), None)

    # -- lifecycle -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["NwcService"]:
        """Started (info published, subscribed) inside the block; stopped after."""
        task = asyncio.create_task(self.run(), name="nwc-service")
        ready = asyncio.create_task(self.ready.wait())
        try:
            done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises the start-up error
            yield self
        finally:
            ready.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Publish the info event and answer requests until cancelled."""
        if self._pool is None:
            self._pool = RelayPool(self.relays, keys=self.keys)
        pool = self._pool
        holds = isinstance(self.wallet, SupportsHoldInvoice) and await self.wallet.hold_invoices_offered()
        if self.send_notifications:
            self.notifications = (PAYMENT_RECEIVED, HOLD_ACCEPTED) if holds else (PAYMENT_RECEIVED,)
        self.methods = METHODS + (HOLD_METHODS if holds else ()) + (("notifications",) if self.notifications else ())
        try:
            await pool.start()
            try:
                await pool.wait_connected(timeout=10.0)
            except RelayError as exc:
                raise WalletError(f"NWC service: no relay reachable ({exc})") from None
            flt = Filter.of(kinds=[REQUEST_KIND], p=[self.pubkey], since=int(time.time()) - 10)
            async with pool.subscribe([flt]) as sub:
                with contextlib.suppress(asyncio.TimeoutError):
                    await sub.wait_eose(10.0)
                await self.publish_info()
                self.ready.set()
                log.info("NWC service %s… serving on %s", self.pubkey[:12], ", ".join(self.relays))
                async for event in sub:
                    self._spawn(self._handle(event))
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._own_pool:
                await pool.close()

    async def publish_info(self) -> None:
        assert self._pool is not None
        tags = [["encryption", f"{NIP44} {NIP04}"]]
        if self.notifications:
            tags.append(["notifications", " ".join(self.notifications)])
        info = Event.build(self.keys, INFO_KIND, " ".join(self.methods), tags)
        await self._pool.publish(info)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ------------------------------------------------------------------------------------------
    async def _handle(self, event: Event) -> None:
        conn = self.connections.get(event.pubkey)
        if conn is None:  # a stranger: no replay bookkeeping, no decryption, few replies
            self.stats["unauthorized"] += 1
            if self._may_answer_stranger(event.pubkey):
                scheme = scheme_of_event_tags(event.tags)
                await self._reply(event, scheme=scheme if scheme in (NIP44, NIP04) else NIP04, method="",
                                  error=("UNAUTHORIZED", "no wallet is connected to this key"))
            return
        refused = self._replays.check(event.id, event.created_at)
        if refused is not None:
            self.stats["replays_refused"] = self.stats.get("replays_refused", 0) + 1
            log.debug("NWC request %s… ignored: %s", event.id[:12], refused)
            return
        exp = event.expiration()
        if exp is not None and exp < time.time():
            return
        scheme = scheme_of_event_tags(event.tags)
        if scheme not in (NIP44, NIP04):
            await self._reply(event, scheme=NIP04, method="", error=("UNSUPPORTED_ENCRYPTION", f"use {NIP44}"))
            return
        try:
            payload = decrypt(self.keys, event.pubkey, event.content)
        except (DecryptionError, InvalidKey, ValueError):
            await self._reply(event, scheme=scheme, method="", error=("OTHER", "cannot decrypt the request"))
            return
        method = payload.get("method")
        params = payload.get("params") or {}
        if not isinstance(method, str) or not isinstance(params, dict):
            await self._reply(event, scheme=scheme, method=str(method), error=("OTHER", "malformed request"))
            return
        self.stats["requests"] += 1
        self.stats["by_scheme"][scheme] = self.stats["by_scheme"].get(scheme, 0) + 1
        counted = method if method in self.methods else "other"  # a client's made-up names stay one key
        self.stats["by_method"][counted] = self.stats["by_method"].get(counted, 0) + 1
        # settling/cancelling a hold frees a held payment that may be holding a slot: never queue it
        gate: Any = contextlib.nullcontext() if method in ("settle_hold_invoice", "cancel_hold_invoice") else self._sem
        async with gate:
            try:
                result = await self._dispatch(conn, method, params)
            except WalletError as exc:
                self.stats["errors"] += 1
                await self._reply(event, scheme=scheme, method=method, error=(error_to_code(exc), str(exc)))
                return
            except Exception as exc:  # a bug must not kill the service; the client gets INTERNAL
                self.stats["errors"] += 1
                log.exception("NWC %s failed", method)
                await self._reply(event, scheme=scheme, method=method, error=("INTERNAL", type(exc).__name__))
                return
        await self._reply(event, scheme=scheme, method=method, result=result)

    def _may_answer_stranger(self, pubkey: str) -> bool:
        """Per key (10 a minute) and global (token bucket) limits on UNAUTHORIZED replies."""
        now = time.monotonic()
        self._unauth_tokens = min(float(_UNAUTH_BURST), self._unauth_tokens + (now - self._unauth_stamp) * _UNAUTH_PER_SECOND)
        self._unauth_stamp = now
        if self._unauth_tokens < 1.0:
            return False
        if len(self._unauth_replied) > 10_000:
            self._unauth_replied.clear()
        recent = [t for t in self._unauth_replied.get(pubkey, []) if now - t < _UNAUTH_WINDOW_S]
        if len(recent) >= _UNAUTH_REPLIES_PER_WINDOW:
            return False
        self._unauth_replied[pubkey] = recent + [now]
        self._unauth_tokens -= 1.0
        return True

    async def _dispatch(self, conn: NwcConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "pay_invoice":
            return await self._pay(conn, params)
        if method == "make_invoice":
            inv = await self.wallet.make_invoice(_amount(params), str(params.get("description") or ""),
                                                 _expiry(params))
            tx = self._issue(inv)
            if (PAYMENT_RECEIVED in self.notifications and len(self._watched) < MAX_WATCHED_INVOICES
                    and inv.payment_hash not in self._watched):
                self._watched.add(inv.payment_hash)
                self._spawn(self._watch_paid(conn.client_pubkey, inv.payment_hash, inv.expires_at))
            return tx
        if method in HOLD_METHODS and method in self.methods:
            return await self._hold(conn, method, params)
        if method == "lookup_invoice":
            return await self._lookup(params)
        if method == "get_balance":
            return {"balance": await self.wallet.balance()}
        if method == "get_info":
            net = self.wallet.network
            pubkey = self.wallet.node_pubkey if isinstance(self.wallet, SupportsNodePubkey) else ""
            return {"alias": "pylon-nwc", "color": "", "pubkey": pubkey,
                    "network": "mainnet" if net == "bitcoin" else net, "block_height": 0, "block_hash": "",
                    "methods": list(self.methods), "notifications": list(self.notifications)}
        raise NotImplementedByWallet(f"method {method!r} is not implemented")

    def _issue(self, inv: Any) -> dict[str, Any]:
        """An invoice this service made (plain or hold), remembered for lookup_invoice; the
        NIP-47 transaction object it answers with."""
        d = decode_bolt11(inv.bolt11)
        tx = {"type": "incoming", "invoice": inv.bolt11, "payment_hash": inv.payment_hash,
              "amount": inv.amount_msat, "description": d.description or "", "fees_paid": 0,
              "created_at": d.created_at, "expires_at": inv.expires_at}
        if len(self._issued) > 100_000:
            self._issued.clear()
        self._issued[inv.payment_hash] = tx
        return {**tx, "state": "pending"}

    # -- hold invoices ---------------------------------------------------------------------------------------
    async def _hold(self, conn: NwcConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
        wallet = self.wallet
        assert isinstance(wallet, SupportsHoldInvoice)  # self.methods lists these only then
        if method == "make_hold_invoice":
            amount, ph = _amount(params), params.get("payment_hash")
            if not isinstance(ph, str) or len(ph) != 64:
                raise InvoiceInvalid("make_hold_invoice needs payment_hash (64 hex)")
            inv = await wallet.make_hold_invoice(amount, ph.lower(), str(params.get("description") or ""),
                                                 _expiry(params))
            self._hold_owner[inv.payment_hash] = conn.client_pubkey
            if HOLD_ACCEPTED in self.notifications:
                self._spawn(self._watch_hold(conn.client_pubkey, inv.payment_hash, inv.expires_at))
            return self._issue(inv)
        if method == "settle_hold_invoice":
            preimage = params.get("preimage")
            if not isinstance(preimage, str) or len(preimage) != 64:
                raise InvoiceInvalid("settle_hold_invoice needs preimage (64 hex)")
            try:
                ph = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
            except ValueError:
                raise InvoiceInvalid("preimage must be hex") from None
            self._check_hold_owner(conn, ph)
            await wallet.settle_hold_invoice(preimage.lower())
            return {}
        ph = params.get("payment_hash")
        if not isinstance(ph, str) or len(ph) != 64:
            raise InvoiceInvalid("cancel_hold_invoice needs payment_hash (64 hex)")
        self._check_hold_owner(conn, ph.lower())
        await wallet.cancel_hold_invoice(ph.lower())
        return {}

    def _check_hold_owner(self, conn: NwcConnection, payment_hash: str) -> None:
        owner = self._hold_owner.get(payment_hash)
        if owner is not None and owner != conn.client_pubkey:
            raise Unauthorized("this hold invoice was made by another connection")

    async def _watch_hold(self, client_pubkey: str, payment_hash: str, expires_at: int) -> None:
        """Send `hold_invoice_accepted` to the connection that made the invoice once a payment
        to it is locked; stop when it settles, is cancelled or expires unpaid."""
        wallet = self.wallet
        assert isinstance(wallet, SupportsHoldInvoice)
        while True:
            left = expires_at - time.time()
            try:
                state = await wallet.wait_hold_invoice(payment_hash, min(max(left, 0.0) + 0.05, HOLD_WATCH_SLICE_S))
            except WalletError as exc:
                log.warning("NWC hold invoice %s…: %s; watching again", payment_hash[:12], type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if state == InvoiceState.ACCEPTED:
                await self._notify(client_pubkey, HOLD_ACCEPTED, {**self._issued.get(payment_hash, {}),
                                                                   "payment_hash": payment_hash, "state": "accepted"})
                return
            if state != InvoiceState.PENDING or left <= 0:
                return

    async def _watch_paid(self, client_pubkey: str, payment_hash: str, expires_at: int) -> None:
        """Send `payment_received` to the connection that made the invoice once it is paid;
        stop when it expires or fails (or the wallet has no answer well after its expiry)."""
        try:
            state = await wait_for_invoice(self.wallet, payment_hash, expires_at, poll_max_s=WATCH_POLL_MAX_S,
                                           label=f"NWC invoice {payment_hash[:12]}…")
            if state == InvoiceState.SETTLED:
                await self._notify(client_pubkey, PAYMENT_RECEIVED, {
                    **self._issued.get(payment_hash, {"type": "incoming", "payment_hash": payment_hash}),
                    "state": "settled", **await self._received(payment_hash)})
        finally:
            self._watched.discard(payment_hash)

    async def _received(self, payment_hash: str) -> dict[str, Any]:
        """What NIP-47 adds to a settled incoming transaction: `settled_at`, and the `preimage`
        (proof of payment for whoever paid it) where the wallet can show it and it hashes to the
        invoice's payment hash; the time of asking where the wallet cannot say when."""
        received = None
        if isinstance(self.wallet, SupportsReceivedDetails):
            try:
                received = await self.wallet.received_details(payment_hash)
            except WalletError as exc:
                log.debug("NWC: no details for settled invoice %s…: %s", payment_hash[:12], exc)
        if received is None or not received.preimage_matches():
            return {"settled_at": int(time.time())}
        out: dict[str, Any] = {"settled_at": received.settled_at, "preimage": received.preimage}
        if payment_hash not in self._issued:  # not made through this service: the wallet knows the amount
            out["amount"] = received.amount_msat
        return out

    async def _notify(self, client_pubkey: str, kind: str, notification: dict[str, Any]) -> None:
        """Publish one notification twice: NIP-44 (23197) and NIP-04 (23196), as NIP-47 asks of a
        service that speaks both."""
        if client_pubkey not in self.connections:
            return
        payload = {"notification_type": kind, "notification": notification}
        assert self._pool is not None
        for event_kind, scheme in ((NOTIFICATION_KIND, NIP44), (LEGACY_NOTIFICATION_KIND, NIP04)):
            try:
                content = encrypt(self.keys, client_pubkey, payload, scheme)
                await self._pool.publish(Event.build(self.keys, event_kind, content, [["p", client_pubkey]]))
            except (RelayError, InvalidKey) as exc:
                log.warning("NWC %s notification not delivered: %s", kind, exc)
        self.stats["notifications"] = self.stats.get("notifications", 0) + 1

    async def _pay(self, conn: NwcConnection, params: dict[str, Any]) -> dict[str, Any]:
        bolt11 = params.get("invoice")
        if not isinstance(bolt11, str):
            raise InvoiceInvalid("pay_invoice needs an invoice")
        decoded = decode_bolt11(bolt11)
        if decoded.amount_msat is None:
            raise NotImplementedByWallet("amountless invoices are not supported")
        amount = decoded.amount_msat
        async with self._budget_lock:  # reserve before paying: concurrent requests cannot both pass
            left = conn.left_msat()
            if left is not None and amount > left:
                raise QuotaExceeded(f"payment of {amount} msat exceeds this connection's budget ({left} msat left)")
            conn.spent_msat += amount
        try:
            payment = await self.wallet.pay_invoice(bolt11, max_msat=amount)
        except WalletError as exc:
            if not _outcome_unknown(exc):
                async with self._budget_lock:
                    conn.spent_msat -= amount
            raise
        async with self._budget_lock:
            conn.spent_msat += payment.fee_msat
        self.stats["paid_msat"] += amount
        return {"preimage": payment.preimage, "fees_paid": payment.fee_msat}

    async def _lookup(self, params: dict[str, Any]) -> dict[str, Any]:
        ph = params.get("payment_hash")
        if not isinstance(ph, str) and isinstance(params.get("invoice"), str):
            ph = decode_bolt11(params["invoice"]).payment_hash
        if not isinstance(ph, str):
            raise InvoiceInvalid("lookup_invoice needs payment_hash or invoice")
        ph = ph.lower()
        try:
            state = await self.wallet.lookup_invoice(ph)
        except InvoiceNotFound:
            pass
        else:
            incoming: dict[str, Any] = {"type": "incoming", "payment_hash": ph, "amount": 0, "fees_paid": 0,
                                        "created_at": 0, **self._issued.get(ph, {}), "state": state.value}
            if state == InvoiceState.SETTLED:
                incoming.update(await self._received(ph))
            return incoming
        out_state = await self.wallet.lookup_payment(ph)
        if out_state == InvoiceState.FAILED:
            raise InvoiceNotFound("no invoice or payment with that hash")
        tx: dict[str, Any] = {"type": "outgoing", "payment_hash": ph, "state": out_state.value, "amount": 0,
                              "fees_paid": 0, "created_at": 0}
        if out_state == InvoiceState.SETTLED and isinstance(self.wallet, SupportsPaymentDetails):
            details = await self.wallet.payment_details(ph)
            if details is not None:
                tx.update(preimage=details.preimage, fees_paid=details.fee_msat, amount=details.amount_msat,
                          settled_at=int(time.time()))
        return tx

    async def _reply(self, request: Event, *, scheme: str, method: str, result: dict[str, Any] | None = None,
                     error: tuple[str, str] | None = None) -> None:
        payload: dict[str, Any] = {"result_type": method, "error": None, "result": result}
        if error is not None:
            payload = {"result_type": method, "error": {"code": error[0], "message": error[1]}, "result": None}
        tags = [["p", request.pubkey], ["e", request.id]]
        if scheme == NIP44:
            tags.append(["encryption", NIP44])
        try:
            content = encrypt(self.keys, request.pubkey, payload, scheme)
            assert self._pool is not None
            await self._pool.publish(Event.build(self.keys, RESPONSE_KIND, content, tags))
        except (RelayError, InvalidKey) as exc:
            log.warning("NWC reply to %s… not delivered: %s", request.id[:12], exc)


def _outcome_unknown(exc: WalletError) -> bool:
    from wallet.errors import WalletTimeout, WalletUnreachable

    return isinstance(exc, (WalletTimeout, WalletUnreachable))


def _amount(params: dict[str, Any]) -> int:
    """A request's `amount` (msat): a positive integer, else InvoiceInvalid."""
    amount = params.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvoiceInvalid("amount (msat) must be a positive integer")
    return amount


def _expiry(params: dict[str, Any]) -> int:
    """A request's `expiry` in seconds (600 when absent or not a positive integer)."""
    expiry = params.get("expiry")
    return int(expiry) if isinstance(expiry, int) and expiry > 0 else 600
