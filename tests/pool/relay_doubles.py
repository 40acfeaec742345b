"""Test DOUBLES for fault injection around the relay pool (each named as a double).

* ScriptedRelayDouble: a websockets server whose answers are scripted per test (a relay that
  swallows EVENTs, forges events, CLOSEs subscriptions, demands AUTH, serves NIP-11). Used
  for behaviour the real relays here cannot be made to show.
* TcpOutageDouble: a TCP forwarder in front of a *real* relay, stopped and restarted on the
  same port to cut the pool off while the relay keeps accepting events from others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from http import HTTPStatus
from typing import Any, Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from pylon.nostr.event import Event

Handler = Callable[["ScriptedRelayDouble", ServerConnection, list], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until predicate() is true (checked every 10 ms) or fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class ScriptedRelayDouble:
    """A relay DOUBLE: every client frame (parsed JSON) goes to `on_message`; it records
    frames in `.received`. Default behaviour: OK true for EVENT, EOSE for REQ."""

    def __init__(self, on_message: Handler | None = None, *, nip11: dict | None = None,
                 challenge_on_connect: str | None = None):
        self.on_message = on_message or ScriptedRelayDouble.default
        self.nip11 = nip11
        self.challenge_on_connect = challenge_on_connect
        self.received: list[list] = []
        self.connections: list[ServerConnection] = []
        self.state: dict[str, Any] = {}
        self._server = None
        self.url = ""

    @staticmethod
    async def default(double: "ScriptedRelayDouble", ws: ServerConnection, msg: list) -> None:
        if msg[0] == "EVENT":
            await ws.send(json.dumps(["OK", msg[1]["id"], True, ""]))
        elif msg[0] == "REQ":
            await ws.send(json.dumps(["EOSE", msg[1]]))

    def _process_request(self, connection: ServerConnection, request) -> Response | None:
        if self.nip11 is not None and "application/nostr+json" in request.headers.get("Accept", ""):
            body = json.dumps(self.nip11).encode()
            headers = Headers([("Content-Type", "application/nostr+json"),
                               ("Content-Length", str(len(body))),
                               ("Access-Control-Allow-Origin", "*")])
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        if self.challenge_on_connect:
            await ws.send(json.dumps(["AUTH", self.challenge_on_connect]))
        try:
            async for frame in ws:
                msg = json.loads(frame)
                self.received.append(msg)
                await self.on_message(self, ws, msg)
        except Exception:  # a closing client is not the double's problem
            pass

    async def __aenter__(self) -> "ScriptedRelayDouble":
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def frames(self, kind: str) -> list[list]:
        return [m for m in self.received if m and m[0] == kind]


class TcpOutageDouble:
    """A TCP forwarder DOUBLE on a fixed port in front of a real relay; stop() cuts every
    connection and refuses new ones until start() listens again on the same port."""

    def __init__(self, target_port: int, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _on_client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            r_reader, r_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            c_writer.close()
            return
        self._writers.update((c_writer, r_writer))
        for coro in (self._pipe(c_reader, r_writer), self._pipe(r_reader, c_writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def forged_copy(event: Event) -> dict:
    """The event with its signature replaced by another (valid-looking) one: must be dropped."""
    d = event.to_dict()
    d["sig"] = secrets.token_hex(64)
    return d


def tampered_copy(event: Event) -> dict:
    """The event with its content changed but id and sig kept: the id no longer matches."""
    d = event.to_dict()
    d["content"] = d["content"] + " (tampered)"
    return d
