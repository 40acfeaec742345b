"""A tiny raw-websocket Nostr client for relay conformance tests (no pylon pool on purpose:
these tests check the relay's exact frames)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from pylon.nostr import Event, Keys

TIMEOUT = 10.0


class RawClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None

    async def __aenter__(self) -> "RawClient":
        self.ws = await websockets.connect(self.url, max_size=None, compression=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj, ensure_ascii=False))

    async def recv(self, timeout: float = TIMEOUT) -> list:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def recv_type(self, *types: str, timeout: float = TIMEOUT) -> list:
        """Next frame whose type is in `types` (others, e.g. AUTH challenges, are skipped)."""
        while True:
            msg = await self.recv(timeout)
            if msg[0] in types:
                return msg

    async def publish(self, event: Event | dict) -> list:
        """Send EVENT and return the OK frame for it."""
        data = event.to_dict() if isinstance(event, Event) else event
        await self.send(["EVENT", data])
        return await self.recv_type("OK")

    async def req(self, sub_id: str, *filters: dict) -> tuple[list[dict], list]:
        """Send REQ, collect events until EOSE or CLOSED: (events, terminal frame)."""
        await self.send(["REQ", sub_id, *filters])
        events: list[dict] = []
        while True:
            msg = await self.recv_type("EVENT", "EOSE", "CLOSED", "NOTICE")
            if msg[0] == "EVENT" and msg[1] == sub_id:
                events.append(msg[2])
            elif msg[0] in ("EOSE", "CLOSED") and msg[1] == sub_id:
                return events, msg
            elif msg[0] == "NOTICE":
                return events, msg

    async def count(self, sub_id: str, *filters: dict) -> list:
        await self.send(["COUNT", sub_id, *filters])
        return await self.recv_type("COUNT", "CLOSED")


def note(keys: Keys, content: str = "hi", kind: int = 1, tags=(), created_at: int | None = None) -> Event:
    return Event.build(keys, kind, content, tags, created_at=created_at)
