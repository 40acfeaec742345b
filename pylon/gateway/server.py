"""Run a `Gateway` on aiohttp: bind, report the base URL, stop cleanly.

`handler_cancellation=True` makes aiohttp cancel a request's handler when its client
disconnects; the handler's job then publishes its kind-5 cancellation (pylon.customer.client).
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from pylon.errors import ConfigError, listen_error
from pylon.gateway.app import Gateway

__all__ = ["GatewayServer", "is_loopback", "require_safe_bind"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_safe_bind(host: str, api_key: str | None) -> None:
    """Anything but loopback reaches the wallet from the network: only with an API key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"binding the gateway to {host} exposes your wallet to the network: "
                          "pass --api-key KEY (or bind to 127.0.0.1)")


class GatewayServer:
    """`async with GatewayServer(gateway, host, port) as server: server.base_url`."""

    def __init__(self, gateway: Gateway, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        require_safe_bind(host, gateway.api_key)
        self.gateway = gateway
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        runner = web.AppRunner(self.gateway.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise listen_error("the gateway", self.host, self.port, exc) from exc
        self._runner = runner
        for address in runner.addresses:  # (host, port, ...) per bound socket: learn the port 0 picked
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "GatewayServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
