"""Shared pieces of the abuse suite and bench/abuse.py, bench/abuse_services.py: a relay in
its own process (so its RSS can be read), an RSS sampler, an honest client that keeps
publishing and reading back while an attack runs, attackers that never read their socket,
and a swarm of strangers for an NWC service.

Everything is on 127.0.0.1 and bounded: every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import websockets

from pylon.nostr import Event, Keys

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 15.0


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RelayProcess:
    """`python tests/abuse/relay_main.py CONFIG` as a child; `.url`, `.pid`, `.peak_mb`, `.log()`."""

    def __init__(self, config: dict[str, Any] | None = None, src: Path | None = None,
                 db: Path | None = None) -> None:
        self.config = config or {}
        self.src = src or REPO  # bench/abuse.py may point at an older checkout
        self.db = db
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.peak_mb = 0.0
        self._sampler: asyncio.Task | None = None
        self._stderr_path: Path | None = None

    async def __aenter__(self) -> "RelayProcess":
        import tempfile

        fd, name = tempfile.mkstemp(prefix="abuse-relay-", suffix=".log")
        os.close(fd)
        self._stderr_path = Path(name)
        env = {**os.environ, "PYTHONPATH": str(self.src)}
        args = [sys.executable, str(REPO / "tests" / "abuse" / "relay_main.py"), json.dumps(self.config)]
        if self.db is not None:
            args.append(str(self.db))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(self._stderr_path, "w"),
                                     env=env, cwd=str(self.src), text=True)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        if not line.startswith("ws://"):
            raise RuntimeError(f"relay did not start: {line!r} {self.log()[-2000:]}")
        self.url = line.strip()
        self.peak_mb = self.rss()
        self._sampler = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> float:
        return rss_mb(self.pid)

    async def _sample(self) -> None:
        while True:
            try:
                self.peak_mb = max(self.peak_mb, self.rss())
            except OSError:
                return
            await asyncio.sleep(0.05)

    def log(self) -> str:
        return self._stderr_path.read_text() if self._stderr_path else ""


async def connect(url: str, **kw: Any):
    return await websockets.connect(url, max_size=None, compression=None, open_timeout=TIMEOUT, **kw)


async def stalled_reader(url: str):
    """A websocket that never reads: websockets stops reading TCP once one frame is queued,
    and a small fixed receive buffer (no autotuning up to 32 MB on loopback) makes the
    relay's own outbox, not the kernel, hold what it cannot deliver."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return await websockets.connect(url, sock=sock, max_size=None, compression=None, max_queue=1,
                                    open_timeout=TIMEOUT)


def nwc_strangers(service_pubkey: str, n: int) -> list[Event]:
    """n NWC get_balance requests to the service, each signed by a fresh key it does not know."""
    from wallet.nwc_proto import NIP44, REQUEST_KIND, encrypt

    out = []
    for _ in range(n):
        k = Keys.generate()
        content = encrypt(k, service_pubkey, {"method": "get_balance", "params": {}}, NIP44)
        out.append(Event.build(k, REQUEST_KIND, content, [["p", service_pubkey], ["encryption", NIP44]]))
    return out


async def count_until_quiet(sub: Any, idle_s: float = 0.5) -> int:
    """How many events a subscription delivers until none arrives for `idle_s` seconds."""
    count = 0
    while True:
        try:
            await asyncio.wait_for(sub.__anext__(), idle_s)
        except (asyncio.TimeoutError, StopAsyncIteration):
            return count
        count += 1


def note(keys: Keys, content: str = "hi", kind: int = 1, tags=(), created_at: int | None = None) -> Event:
    return Event.build(keys, kind, content, tags, created_at=created_at)


class HonestClient:
    """Publishes one event at a time and waits for its OK and for its echo on a subscription.

    `latencies` (s) per round; `lost` counts rounds whose OK was false or whose echo did not
    arrive in time. It uses its own connection, like any other client of the relay."""

    def __init__(self, url: str, rounds: int = 40, pause: float = 0.02) -> None:
        self.url = url
        self.rounds = rounds
        self.pause = pause
        self.keys = Keys.generate()
        self.latencies: list[float] = []
        self.lost = 0
        self.errors: list[str] = []
        self.ready = asyncio.Event()  # set once connected and subscribed: start the attack then

    async def run(self) -> "HonestClient":
        ws = await connect(self.url)
        try:
            await ws.send(json.dumps(["REQ", "honest", {"authors": [self.keys.public_key], "limit": 0}]))
            await self._until(ws, lambda m: m[:2] == ["EOSE", "honest"])
            self.ready.set()
            for i in range(self.rounds):
                ev = note(self.keys, f"honest {i}")
                start = time.perf_counter()
                await ws.send(json.dumps(["EVENT", ev.to_dict()]))
                ok = echo = False
                try:
                    while not (ok and echo):
                        msg = await self._recv(ws)
                        if msg[:2] == ["OK", ev.id]:
                            if msg[2] is not True:
                                self.errors.append(str(msg))
                                break
                            ok = True
                        elif msg[:2] == ["EVENT", "honest"] and msg[2]["id"] == ev.id:
                            echo = True
                except (asyncio.TimeoutError, websockets.ConnectionClosed) as exc:
                    self.errors.append(repr(exc))
                if ok and echo:
                    self.latencies.append(time.perf_counter() - start)
                else:
                    self.lost += 1
                await asyncio.sleep(self.pause)
        finally:
            await ws.close()
        return self

    @staticmethod
    async def _recv(ws) -> list:
        return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))

    async def _until(self, ws, predicate) -> list:
        while True:
            msg = await self._recv(ws)
            if predicate(msg):
                return msg

    def p(self, q: float) -> float:
        """Latency quantile in ms (0 when nothing was measured)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def publish_many(url: str, events: list[Event], window: int = 200, after: asyncio.Event | None = None) -> int:
    """Publish events over one connection (pipelined, `window` unanswered at most), once
    `after` is set if given; returns how many were accepted (OK true)."""
    ws = await connect(url)
    if after is not None:
        await after.wait()
    accepted = 0
    try:
        sent = answered = 0
        while answered < len(events):
            while sent < len(events) and sent - answered < window:
                await ws.send(json.dumps(["EVENT", events[sent].to_dict()]))
                sent += 1
            msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if msg[0] == "OK":
                answered += 1
                accepted += msg[2] is True
    finally:
        await ws.close()
    return accepted
