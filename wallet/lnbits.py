"""LNbits wallet over its REST API (httpx).

URI: `lnbits://<api key>@<host>:<port>[/<path prefix>][?tls=0|1&network=<net>]`
  - the key is the wallet's admin key (pay + invoice) or invoice/read key (invoice + lookup
    only: paying then raises Unauthorized);
  - tls defaults to 0 for 127.0.0.1/localhost and 1 for any other host;
  - network (which chain its invoices are for) defaults to "bitcoin": LNbits' FakeWallet and
    mainnet nodes issue `lnbc…` invoices; set network=regtest/testnet/signet for other nodes.
Example: `lnbits://6f1e…adminkey@127.0.0.1:5000?tls=0`.

Endpoints: POST /api/v1/payments (out=false: invoice, out=true: pay), GET /api/v1/payments/<hash>,
GET /api/v1/wallet. LNbits works in whole sats; amounts are converted at the edge.

No pay-for-the-key here: LNbits (1.6.2) takes no caller-chosen preimage, and its hold invoices
(`payment_hash` on POST /api/v1/payments, /settle, /cancel) need an LND funding source
(FakeWallet refuses them) and are settled at once, without the preimage, when paid from the
same LNbits; so this wallet declares neither capability (docs/WALLETS.md).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from wallet.base import NETWORKS, Invoice, InvoiceState, Payment, Received
from wallet.bolt11_codec import decode_bolt11, decode_payable
from wallet.errors import (
    AlreadyPaid,
    InsufficientBalance,
    InvoiceExpired,
    InvoiceInvalid,
    InvoiceNotFound,
    PaymentFailed,
    Unauthorized,
    WalletError,
    WalletTimeout,
    WalletUnreachable,
    WalletUriInvalid,
)
from wallet.uri import query_params, redact_uri

log = logging.getLogger(__name__)


class LNbitsWallet:
    """A `Wallet` backed by one LNbits wallet (identified by its API key)."""

    #: LNbits invoices whole sats only: providers round quotes up to this (pylon.jobs.pricing).
    invoice_unit_msat: int = 1000

    def __init__(self, base_url: str, api_key: str, *, network: str = "bitcoin", timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not api_key:
            raise Unauthorized("LNbits wallet URI needs an API key: lnbits://KEY@host:port")
        if network not in NETWORKS:
            raise WalletError(f"unknown network {network!r}; one of {', '.join(NETWORKS)}")
        self.base_url = base_url.rstrip("/")
        self.network = network
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport,
                                         headers={"X-Api-Key": api_key, "Accept": "application/json"})

    @classmethod
    def from_uri(cls, uri: str) -> "LNbitsWallet":
        base, key, network = parse_lnbits_uri(uri)
        return cls(base, key, network=network)

    def __repr__(self) -> str:
        return f"LNbitsWallet(base_url={self.base_url!r}, network={self.network!r})"

    # -- HTTP ------------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            resp = await self._client.request(method, path, json=json)
        except httpx.TimeoutException:
            raise WalletTimeout(f"LNbits at {self.base_url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise WalletUnreachable(f"cannot reach LNbits at {self.base_url}: {type(exc).__name__}",
                                    hint="is LNbits running there? check the host, port and tls= of the wallet URI "
                                         "(lnbits://KEY@host:port)") from None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return resp.status_code, body

    @staticmethod
    def _detail(body: Any) -> str:
        if isinstance(body, dict):
            d = body.get("detail", body.get("message", ""))
            return d if isinstance(d, str) else str(d)[:200]
        return str(body)[:200]

    def _raise_common(self, status: int, body: Any) -> None:
        detail = self._detail(body)
        if status in (401, 403) or (status == 404 and "wallet not found" in detail.lower()):
            raise Unauthorized(f"LNbits refused the API key ({status}: {detail})")
        if status >= 500 and status != 520:
            raise WalletUnreachable(f"LNbits server error {status}: {detail}")

    # -- Wallet protocol ---------------------------------------------------------------------------
    async def make_invoice(self, amount_msat: int, memo: str = "", expiry_s: int = 600) -> Invoice:
        if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat <= 0:
            raise InvoiceInvalid("invoice amount must be a positive integer number of millisats")
        if amount_msat % 1000:
            raise InvoiceInvalid("LNbits issues whole-sat invoices: amount_msat must be a multiple of 1000")
        if not isinstance(expiry_s, int) or expiry_s <= 0:
            raise InvoiceInvalid("invoice expiry must be a positive number of seconds")
        status, body = await self._request("POST", "/api/v1/payments",
                                           {"out": False, "amount": amount_msat // 1000, "memo": memo or "",
                                            "expiry": expiry_s})
        self._raise_common(status, body)
        if status not in (200, 201) or not isinstance(body, dict):
            raise InvoiceInvalid(f"LNbits could not create the invoice ({status}: {self._detail(body)})")
        bolt11 = body.get("bolt11") or body.get("payment_request")
        if not isinstance(bolt11, str):
            raise WalletError("LNbits answered without an invoice")
        decoded = decode_bolt11(bolt11)
        return Invoice(bolt11=bolt11, payment_hash=decoded.payment_hash, amount_msat=decoded.amount_msat or amount_msat,
                       expires_at=decoded.expires_at)

    async def pay_invoice(self, bolt11: str, *, max_msat: int) -> Payment:
        decoded = decode_payable(bolt11, max_msat=max_msat)
        status, body = await self._request("POST", "/api/v1/payments", {"out": True, "bolt11": decoded.bolt11})
        self._raise_common(status, body)
        detail = self._detail(body).lower()
        if status not in (200, 201):
            if "insufficient balance" in detail:
                raise InsufficientBalance(f"LNbits: {self._detail(body)}")
            if "already paid" in detail:
                raise AlreadyPaid(f"LNbits: {self._detail(body)}")
            if "expired" in detail:
                raise InvoiceExpired(f"LNbits: {self._detail(body)}")
            if "decod" in detail or status == 400:
                raise InvoiceInvalid(f"LNbits rejected the invoice: {self._detail(body)}")
            raise PaymentFailed(f"LNbits could not pay ({status}: {self._detail(body)})")
        if not isinstance(body, dict):
            raise PaymentFailed("LNbits answered the payment with no details")
        state = str(body.get("status", "")).lower()
        if state == "failed":
            raise PaymentFailed("LNbits reports the payment failed")
        if state == "pending" or not body.get("preimage"):
            # in flight: the caller must treat the outcome as unknown and look it up later
            raise WalletTimeout("LNbits reports the payment still in flight; look it up later")
        assert decoded.amount_msat is not None  # decode_payable refuses amountless invoices
        return Payment(preimage=str(body["preimage"]), fee_msat=abs(int(body.get("fee") or 0)),
                       payment_hash=decoded.payment_hash, amount_msat=decoded.amount_msat)

    async def _get_payment(self, payment_hash: str) -> dict[str, Any] | None:
        ph = payment_hash.lower()
        if len(ph) != 64 or any(c not in "0123456789abcdef" for c in ph):
            raise InvoiceInvalid("payment hash must be 64 hex characters")
        status, body = await self._request("GET", f"/api/v1/payments/{ph}")
        if status == 404 and "payment" in self._detail(body).lower():
            return None
        self._raise_common(status, body)
        if status != 200 or not isinstance(body, dict):
            raise WalletError(f"LNbits payment lookup failed ({status}: {self._detail(body)})")
        return body

    @staticmethod
    def _direction_amount(body: dict[str, Any]) -> int:
        details = body.get("details") or {}
        try:
            return int(details.get("amount", 0))
        except (TypeError, ValueError):
            return 0

    async def lookup_invoice(self, payment_hash: str) -> InvoiceState:
        body = await self._get_payment(payment_hash)
        if body is None or self._direction_amount(body) < 0:
            raise InvoiceNotFound(f"no invoice {payment_hash[:16]}… in this LNbits wallet")
        return self._state(body, incoming=True)

    async def lookup_payment(self, payment_hash: str) -> InvoiceState:
        body = await self._get_payment(payment_hash)
        if body is None or self._direction_amount(body) > 0:
            return InvoiceState.FAILED  # this wallet has no outgoing payment for that hash
        return self._state(body, incoming=False)

    async def payment_details(self, payment_hash: str) -> Payment | None:
        body = await self._get_payment(payment_hash)
        if body is None or self._direction_amount(body) > 0 or not body.get("paid"):
            return None
        details = body.get("details") or {}
        return Payment(preimage=str(body.get("preimage") or details.get("preimage") or ""),
                       fee_msat=abs(int(details.get("fee") or 0)), payment_hash=payment_hash.lower(),
                       amount_msat=abs(self._direction_amount(body)))

    async def received_details(self, payment_hash: str) -> Received | None:
        """A paid incoming invoice's preimage, and its last update as the settle time (LNbits
        1.x has no settle field; `updated_at` is when the payment row turned paid)."""
        body = await self._get_payment(payment_hash)
        if body is None or self._direction_amount(body) <= 0 or not body.get("paid"):
            return None
        details = body.get("details") or {}
        return Received(payment_hash=payment_hash.lower(),
                        preimage=str(body.get("preimage") or details.get("preimage") or "").lower(),
                        amount_msat=self._direction_amount(body),
                        settled_at=_unix_seconds(details.get("updated_at") or details.get("time")))

    @staticmethod
    def _state(body: dict[str, Any], *, incoming: bool) -> InvoiceState:
        if body.get("paid"):
            return InvoiceState.SETTLED
        status = str(body.get("status") or (body.get("details") or {}).get("status") or "").lower()
        if status in ("failed",):
            return InvoiceState.FAILED
        if status == "expired":
            return InvoiceState.EXPIRED
        bolt11 = (body.get("details") or {}).get("bolt11")
        if incoming and isinstance(bolt11, str):
            try:
                if decode_bolt11(bolt11).is_expired():
                    return InvoiceState.EXPIRED
            except InvoiceInvalid:
                pass
        return InvoiceState.PENDING

    async def balance(self) -> int:
        status, body = await self._request("GET", "/api/v1/wallet")
        self._raise_common(status, body)
        if status != 200 or not isinstance(body, dict) or "balance" not in body:
            raise WalletError(f"LNbits balance lookup failed ({status}: {self._detail(body)})")
        return int(body["balance"])  # LNbits reports the wallet balance in msat

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "LNbitsWallet":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _unix_seconds(value: Any) -> int:
    """LNbits' timestamps: ISO 8601 strings (1.x) or unix seconds (older); now if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return int(time.time())
        return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp())
    return int(time.time())


def parse_lnbits_uri(uri: str) -> tuple[str, str, str]:
    """`lnbits://KEY@host:port[/path][?tls=1&network=...]` -> (base URL, admin key, network),
    without opening anything; WalletUriInvalid for what it cannot be."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not parts.hostname or parts.username is None:
        raise WalletUriInvalid(f"LNbits URI must look like lnbits://KEY@host:port, got {redact_uri(uri)!r}")
    q = {k: v[-1] for k, v in query_params(parts.query, ("tls", "network"), "an LNbits wallet URI").items()}
    host = parts.hostname
    local = host in ("127.0.0.1", "localhost", "::1")
    if scheme == "lnbits+https":
        tls = True
    elif scheme == "lnbits+http":
        tls = False
    else:
        tls = q.get("tls", "0" if local else "1").lower() in ("1", "true", "yes", "on")
    try:
        port = parts.port
    except ValueError:
        raise WalletUriInvalid(f"bad port in {redact_uri(uri)!r}") from None
    hostport = f"[{host}]" if ":" in host else host
    if port:
        hostport += f":{port}"
    base = f"{'https' if tls else 'http'}://{hostport}{parts.path.rstrip('/')}"
    network = q.get("network", "bitcoin")
    if network not in NETWORKS:
        raise WalletUriInvalid(f"unknown network {network!r} in an LNbits wallet URI; one of {', '.join(NETWORKS)}")
    return base, unquote(parts.username), network
