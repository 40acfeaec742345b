"""NIP-47 Nostr Wallet Connect client: a `Wallet` that talks to a remote wallet service.

URI: `nostr+walletconnect://<wallet pubkey>?relay=<ws url>[&relay=…]&secret=<hex>` — the
secret is this client's key (it signs requests and derives the encryption key).

How a call works: one RelayPool (keys = the connection secret, which also answers NIP-42
AUTH) and one long-lived subscription to responses (kind 23195, author = wallet,
`#p` = us) are opened on first use, BEFORE any request is published. A request (kind 23194,
`p` = wallet, `expiration` = now + timeout) is published and its future is resolved by the
response whose `e` tag equals the request id. A missing answer raises WalletTimeout (for a
payment, the outcome is then unknown: look it up).

Encryption: NIP-44 v2, unless the wallet's info event (kind 13194) exists and does not list
"nip44_v2" in its `encryption` tag — then NIP-04, as NIP-47 prescribes for old wallets.
`await wallet.connect()` (or `wallet.connect_wallet(uri)`) fetches the info event and, via
get_info, the wallet's network; until then `network` is the URI's `network=` value or "bitcoin".

Waiting for money (`wait_invoice`, wallet.base.SupportsWaitInvoice, and `wait_hold_invoice`):
the same subscription takes the wallet's notifications (kinds 23197 and 23196, `#p` = us).
`payment_received` wakes `wait_invoice` and `hold_invoice_accepted` wakes `wait_hold_invoice`
at once. Notifications are ephemeral (one missed while no relay was connected is gone), so a
wait also asks `lookup_invoice` at the start and every `lookup_every_s`: the notification
makes it fast, the lookup makes it certain. The lookup at the start is skipped for an invoice
this client made itself while subscribed to a wallet that sends that notification (it cannot
have come before the subscription): one NWC round trip less per invoice (issue 15). A wallet
that does not send the notification is looked up with a growing interval (10 ms, x1.5, up to
1 s), as wallet.waiting polls.

Hold invoices (NIP-47 make/settle/cancel_hold_invoice): offered when the wallet's info event
(or get_info) lists all three methods — `hold_invoices_offered()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

from pylon.errors import RelayError
from pylon.nostr.errors import DecryptionError, InvalidKey
from pylon.nostr.event import Event
from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool, Subscription
from wallet.base import NETWORKS, Invoice, InvoiceState, Payment
from wallet.bolt11_codec import decode_bolt11, decode_payable
from wallet.errors import (
    InvoiceInvalid,
    InvoiceNotFound,
    NotImplementedByWallet,
    PaymentFailed,
    Unauthorized,
    WalletError,
    WalletTimeout,
    WalletUnreachable,
)
from wallet.nwc_proto import (
    HOLD_ACCEPTED,
    HOLD_METHODS,
    INFO_KIND,
    LEGACY_NOTIFICATION_KIND,
    NIP04,
    NIP44,
    NOTIFICATION_KIND,
    PAYMENT_RECEIVED,
    REQUEST_KIND,
    RESPONSE_KIND,
    ConnectionUri,
    decrypt,
    encrypt,
    error_from_response,
    info_notifications,
    info_schemes,
)
from wallet.uri import redact_uri
from wallet.waiting import POLL_FIRST_S, POLL_GROWTH, POLL_MAX_S

log = logging.getLogger(__name__)

_NET_ALIASES = {"mainnet": "bitcoin", "bitcoin": "bitcoin", "testnet": "testnet", "testnet3": "testnet",
                "testnet4": "testnet", "signet": "signet", "regtest": "regtest"}


class NwcWallet:
    """A `Wallet` over NIP-47. Safe for concurrent calls (responses are matched by request id)."""

    def __init__(self, conn: ConnectionUri, *, timeout: float = 30.0, network: str | None = None,
                 pool: RelayPool | None = None, connect_timeout: float = 10.0) -> None:
        self.conn = conn
        self.keys = Keys.from_hex(conn.secret)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.network = network if network in NETWORKS else "bitcoin"
        self.encryption: str = NIP44
        self.methods: set[str] | None = None   # from the info event, when found
        self.notifications: set[str] = set()     # notification types the wallet sends
        self.lookup_every_s = 5.0  # a wait the wallet notifies still asks lookup_invoice this often
        # payment hashes named by each notification type waited on, and their waiters
        self._sightings = {PAYMENT_RECEIVED: _Sightings(), HOLD_ACCEPTED: _Sightings()}
        self._pool = pool
        self._own_pool = pool is None
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._start_lock = asyncio.Lock()
        self._started = False
        self._connected = False
        self._closed = False

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "NwcWallet":
        from urllib.parse import parse_qs, urlsplit

        conn = ConnectionUri.parse(uri)
        net = parse_qs(urlsplit(uri).query).get("network", [None])[0]
        return cls(conn, network=_NET_ALIASES.get(net or "", None), **kwargs)

    def __repr__(self) -> str:
        return f"NwcWallet({redact_uri(self.conn.to_uri())!r})"

    @property
    def wallet_pubkey(self) -> str:
        return self.conn.wallet_pubkey

    # -- connection -------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise WalletError("NWC wallet is closed")
            if self._pool is None:
                self._pool = RelayPool(list(self.conn.relays), keys=self.keys, connect_timeout=self.connect_timeout)
            try:
                await self._pool.start()
                await self._pool.wait_connected(timeout=self.connect_timeout)
            except RelayError as exc:
                raise WalletUnreachable(f"no NWC relay reachable: {exc}") from None
            flt = Filter.of(kinds=[RESPONSE_KIND], authors=[self.conn.wallet_pubkey], p=[self.keys.public_key],
                            since=int(time.time()) - 60)
            notes = Filter.of(kinds=[NOTIFICATION_KIND, LEGACY_NOTIFICATION_KIND], authors=[self.conn.wallet_pubkey],
                              p=[self.keys.public_key], since=int(time.time()) - 60)
            self._sub = self._pool.subscribe([flt, notes])
            await self._sub.open()
            with contextlib.suppress(asyncio.TimeoutError):
                await self._sub.wait_eose(self.connect_timeout)
            self._reader = asyncio.create_task(self._read_responses(), name="nwc-responses")
            self._started = True

    async def connect(self) -> "NwcWallet":
        """Open the relays, read the wallet's info event (methods, encryption) and its network."""
        await self._start()
        if self._connected:
            return self
        assert self._pool is not None
        try:
            infos = await self._pool.query([Filter.of(kinds=[INFO_KIND], authors=[self.conn.wallet_pubkey])],
                                           timeout=self.connect_timeout)
        except RelayError as exc:
            raise WalletUnreachable(f"cannot read the NWC info event: {exc}") from None
        if infos:
            info = infos[0]
            self.methods = set(info.content.split())
            self.notifications = set(info_notifications(info.tags))
            self.encryption = NIP44 if NIP44 in info_schemes(info.tags) else NIP04
        else:
            log.warning("NWC wallet %s… published no info event; using NIP-44 v2", self.conn.wallet_pubkey[:12])
        if self.methods is None or "get_info" in self.methods:
            try:
                result = await self.request("get_info", {})
            except Unauthorized:
                raise
            except WalletError as exc:
                log.info("NWC get_info failed (%s); network stays %s", type(exc).__name__, self.network)
            else:
                net = _NET_ALIASES.get(str(result.get("network", "")).lower())
                if net:
                    self.network = net
                if isinstance(result.get("methods"), list) and self.methods is None:
                    self.methods = {str(m) for m in result["methods"]}
                if isinstance(result.get("notifications"), list) and not self.notifications:
                    self.notifications = {str(n) for n in result["notifications"]}
        self._connected = True
        return self

    async def _read_responses(self) -> None:
        assert self._sub is not None
        try:
            async for event in self._sub:
                if event.kind in (NOTIFICATION_KIND, LEGACY_NOTIFICATION_KIND):
                    self._on_notification(event)
                else:
                    self._on_response(event)
        except Exception as exc:  # subscription closed by the relays: fail everything waiting
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(WalletUnreachable(f"NWC relay subscription ended: {type(exc).__name__}"))

    def _on_response(self, event: Event) -> None:
        req_ids = [t[1] for t in event.tags if len(t) >= 2 and t[0] == "e"]
        for req_id in req_ids:
            fut = self._pending.get(req_id)
            if fut is None or fut.done():
                continue
            try:
                payload = decrypt(self.keys, self.conn.wallet_pubkey, event.content)
            except (DecryptionError, InvalidKey, ValueError) as exc:
                log.warning("undecryptable NWC response %s: %s", event.id[:12], type(exc).__name__)
                continue
            fut.set_result(payload)
            return

    def _on_notification(self, event: Event) -> None:
        if not any(t[:2] == ["p", self.keys.public_key] for t in event.tags):
            return
        if event.kind == LEGACY_NOTIFICATION_KIND and self.encryption == NIP44:
            return  # the NIP-04 twin of a 23197 we read (NIP-47: a service that speaks both sends both)
        try:
            payload = decrypt(self.keys, self.conn.wallet_pubkey, event.content)
        except (DecryptionError, InvalidKey, ValueError) as exc:
            log.debug("undecryptable NWC notification %s: %s", event.id[:12], type(exc).__name__)
            return
        note = payload.get("notification")
        sightings = self._sightings.get(str(payload.get("notification_type")))
        if sightings is None or not isinstance(note, dict):
            return  # other notifications (payment_sent): nothing here waits on them
        ph = str(note.get("payment_hash") or "").lower()
        if len(ph) == 64:
            sightings.saw(ph)

    # -- requests ------------------------------------------------------------------------------------
    async def request(self, method: str, params: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send one NIP-47 request and return its `result` object; typed errors for error answers."""
        await self._start()
        if self.methods is not None and method not in self.methods and method != "get_info":
            raise NotImplementedByWallet(f"the wallet does not offer {method}")
        timeout = self.timeout if timeout is None else timeout
        tags = [["p", self.conn.wallet_pubkey], ["expiration", str(int(time.time() + timeout) + 1)]]
        if self.encryption == NIP44:
            tags.append(["encryption", NIP44])
        content = encrypt(self.keys, self.conn.wallet_pubkey, {"method": method, "params": params}, self.encryption)
        event = Event.build(self.keys, REQUEST_KIND, content, tags)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[event.id] = fut
        assert self._pool is not None
        try:
            try:
                await self._pool.publish(event, timeout=min(timeout, 10.0))
            except RelayError as exc:
                raise WalletUnreachable(f"NWC request not accepted by any relay: {exc}") from None
            try:
                async with asyncio.timeout(timeout):  # not wait_for: racy cancellation on 3.11
                    payload = await fut
            except TimeoutError:
                raise WalletTimeout(f"NWC wallet did not answer {method} within {timeout:g}s") from None
        finally:
            self._pending.pop(event.id, None)
        err = payload.get("error")
        if err:
            if isinstance(err, dict):
                raise error_from_response(err.get("code"), err.get("message"))
            raise error_from_response("OTHER", err)
        if payload.get("result_type") not in (None, method):
            raise WalletError(f"NWC answer has result_type {payload.get('result_type')!r}, expected {method!r}")
        result = payload.get("result")
        if not isinstance(result, dict):
            raise WalletError(f"NWC answer to {method} has no result")
        return result

    # -- Wallet protocol -------------------------------------------------------------------------------
    async def pay_invoice(self, bolt11: str, *, max_msat: int) -> Payment:
        decoded = decode_payable(bolt11, max_msat=max_msat)
        assert decoded.amount_msat is not None  # decode_payable refuses amountless invoices
        result = await self.request("pay_invoice", {"invoice": decoded.bolt11})
        preimage = str(result.get("preimage") or "")
        payment = Payment(preimage=preimage, fee_msat=_int(result.get("fees_paid")),
                          payment_hash=decoded.payment_hash, amount_msat=decoded.amount_msat)
        if not payment.preimage_matches():
            raise PaymentFailed("the NWC wallet returned a preimage that does not match the invoice; "
                                "check the payment in the wallet")
        return payment

    async def make_invoice(self, amount_msat: int, memo: str = "", expiry_s: int = 600) -> Invoice:
        if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat <= 0:
            raise InvoiceInvalid("invoice amount must be a positive integer number of millisats")
        result = await self.request("make_invoice", {"amount": amount_msat, "description": memo or "",
                                                     "expiry": int(expiry_s)})
        bolt11 = result.get("invoice")
        if not isinstance(bolt11, str):
            raise WalletError("NWC make_invoice answer has no invoice")
        decoded = decode_bolt11(bolt11)
        if decoded.amount_msat != amount_msat:
            raise WalletError(f"NWC wallet issued an invoice for {decoded.amount_msat} msat, asked {amount_msat}")
        self._made_here(PAYMENT_RECEIVED, decoded.payment_hash)
        return Invoice(bolt11=bolt11, payment_hash=decoded.payment_hash, amount_msat=amount_msat,
                       expires_at=decoded.expires_at)

    async def wait_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
        """Wait up to `timeout` s for an invoice we made to leave PENDING (wallet.base.SupportsWaitInvoice):
        woken by the wallet's `payment_received` notification where it sends one (with a lookup
        every `lookup_every_s` for a notification lost while no relay was connected), else by
        lookups that thin out (10 ms, x1.5, up to 1 s). PENDING on timeout."""
        return await self._wait_notified(PAYMENT_RECEIVED, _hash(payment_hash), timeout, InvoiceState.SETTLED)

    def _hears(self, kind: str) -> bool:
        """The wallet sends notifications of `kind` and our subscription is reading them."""
        return kind in self.notifications and self._reader is not None and not self._reader.done()

    def _made_here(self, kind: str, payment_hash: str) -> None:
        """An invoice made while the notifications of `kind` were being read: its notification
        cannot come before the subscription, so the first wait for it need not ask first."""
        if self._hears(kind):
            self._sightings[kind].made_here(payment_hash)

    async def _wait_notified(self, kind: str, ph: str, timeout: float, named: InvoiceState) -> InvoiceState:
        """`named` once a `kind` notification names `ph`, or the state lookup_invoice finds once it
        is not PENDING; PENDING on timeout. A wallet that does not send `kind` is looked up with
        a growing interval; one that does, every `lookup_every_s`."""
        await self._start()
        sightings = self._sightings[kind]
        notified = self._hears(kind)
        deadline = time.monotonic() + max(timeout, 0.0)
        wake = sightings.wakes.setdefault(ph, asyncio.Event())
        ask = not notified or ph not in sightings.made  # made here while subscribed: the notification says it first
        delay = self.lookup_every_s if notified else POLL_FIRST_S
        try:
            while True:
                if ph in sightings.seen:
                    return named
                if ask:
                    state = await self.lookup_invoice(ph)
                    if state != InvoiceState.PENDING:
                        return state
                ask = True  # from the second turn on: a notification lost in a relay outage is found
                left = deadline - time.monotonic()
                if left <= 0:
                    return InvoiceState.PENDING
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, delay)):
                        await wake.wait()
                if not notified:
                    delay = min(delay * POLL_GROWTH, POLL_MAX_S)
        finally:
            sightings.wakes.pop(ph, None)

    # -- hold invoices (wallet.base.SupportsHoldInvoice) ------------------------------------------------
    async def hold_invoices_offered(self) -> bool:
        """True when the wallet lists make/settle/cancel_hold_invoice (info event or get_info)."""
        await self.connect()
        return self.methods is not None and set(HOLD_METHODS) <= self.methods

    async def make_hold_invoice(self, amount_msat: int, payment_hash: str, memo: str = "",
                                expiry_s: int = 600) -> Invoice:
        if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat <= 0:
            raise InvoiceInvalid("invoice amount must be a positive integer number of millisats")
        ph = _hash(payment_hash)
        result = await self.request("make_hold_invoice", {"amount": amount_msat, "payment_hash": ph,
                                                          "description": memo or "", "expiry": int(expiry_s)})
        bolt11 = result.get("invoice")
        if not isinstance(bolt11, str):
            raise WalletError("NWC make_hold_invoice answer has no invoice")
        decoded = decode_bolt11(bolt11)
        if decoded.payment_hash != ph:
            raise WalletError("NWC wallet issued a hold invoice for another payment hash")
        if decoded.amount_msat != amount_msat:
            raise WalletError(f"NWC wallet issued an invoice for {decoded.amount_msat} msat, asked {amount_msat}")
        self._made_here(HOLD_ACCEPTED, ph)
        return Invoice(bolt11=bolt11, payment_hash=ph, amount_msat=amount_msat, expires_at=decoded.expires_at)

    async def wait_hold_invoice(self, payment_hash: str, timeout: float) -> InvoiceState:
        """Until a payment to the hold invoice is locked (the `hold_invoice_accepted` notification,
        or `lookup_invoice` saying accepted) or it settles/expires/fails; PENDING on timeout."""
        return await self._wait_notified(HOLD_ACCEPTED, _hash(payment_hash), timeout, InvoiceState.ACCEPTED)

    async def settle_hold_invoice(self, preimage: str) -> None:
        key = _hash(preimage)  # 32 bytes of hex, like a hash
        await self.request("settle_hold_invoice", {"preimage": key})
        self._sightings[HOLD_ACCEPTED].forget(hashlib.sha256(bytes.fromhex(key)).hexdigest())

    async def cancel_hold_invoice(self, payment_hash: str) -> None:
        ph = _hash(payment_hash)
        await self.request("cancel_hold_invoice", {"payment_hash": ph})
        self._sightings[HOLD_ACCEPTED].forget(ph)

    async def _lookup(self, payment_hash: str) -> dict[str, Any] | None:
        ph = payment_hash.lower()
        if len(ph) != 64 or any(c not in "0123456789abcdef" for c in ph):
            raise InvoiceInvalid("payment hash must be 64 hex characters")
        try:
            return await self.request("lookup_invoice", {"payment_hash": ph})
        except InvoiceNotFound:
            return None

    @staticmethod
    def _state(tx: dict[str, Any]) -> InvoiceState:
        state = str(tx.get("state") or "").lower()
        if state in ("settled", "pending", "accepted", "expired", "failed"):
            return InvoiceState(state)
        if tx.get("settled_at") or tx.get("preimage") and tx.get("type") == "outgoing":
            return InvoiceState.SETTLED
        expires = _int(tx.get("expires_at"))
        if expires and time.time() >= expires:
            return InvoiceState.EXPIRED
        return InvoiceState.PENDING

    async def lookup_invoice(self, payment_hash: str) -> InvoiceState:
        tx = await self._lookup(payment_hash)
        if tx is None or tx.get("type", "incoming") != "incoming":
            raise InvoiceNotFound(f"the NWC wallet knows no invoice {payment_hash[:16]}…")
        return self._state(tx)

    async def lookup_payment(self, payment_hash: str) -> InvoiceState:
        tx = await self._lookup(payment_hash)
        if tx is None or tx.get("type") != "outgoing":
            return InvoiceState.FAILED
        return self._state(tx)

    async def payment_details(self, payment_hash: str) -> Payment | None:
        tx = await self._lookup(payment_hash)
        if tx is None or tx.get("type") != "outgoing" or self._state(tx) != InvoiceState.SETTLED:
            return None
        return Payment(preimage=str(tx.get("preimage") or ""), fee_msat=_int(tx.get("fees_paid")),
                       payment_hash=payment_hash.lower(), amount_msat=_int(tx.get("amount")))

    async def balance(self) -> int:
        result = await self.request("get_balance", {})
        return _int(result.get("balance"))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(WalletError("NWC wallet closed"))
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.close()
        if self._pool is not None and self._own_pool:
            await self._pool.close()

    async def __aenter__(self) -> "NwcWallet":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Sightings:
    """The payment hashes one notification type has named, the invoices made here while it was
    being read, and the waiters to wake. Bounded: past `LIMIT` a set starts over (a hash it
    forgot is then looked up, as after a restart)."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.made: set[str] = set()
        self.wakes: dict[str, asyncio.Event] = {}

    def saw(self, payment_hash: str) -> None:
        if len(self.seen) > self.LIMIT:
            self.seen.clear()
        self.seen.add(payment_hash)
        wake = self.wakes.get(payment_hash)
        if wake is not None:
            wake.set()

    def made_here(self, payment_hash: str) -> None:
        if len(self.made) > self.LIMIT:
            self.made.clear()
        self.made.add(payment_hash)

    def forget(self, payment_hash: str) -> None:
        self.seen.discard(payment_hash)
        self.made.discard(payment_hash)


def _hash(value: Any) -> str:
    """32 bytes of lowercase hex (a payment hash or a preimage), else InvoiceInvalid."""
    text = str(value or "").lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InvoiceInvalid("payment hash and preimage must be 64 hex characters")
    return text


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
