"""A small HTTP/1.1 client for the provider's one call per job: POST a JSON body, read the answer.

Why not aiohttp for this call: against the instant OpenAI double, one aiohttp
`session.post(...)` and `read()` cost ~290 us of the provider's CPU; the same request written
and read on a pooled asyncio stream costs ~50 us (issue 15: the backend call was 12-20 % of the
provider's CPU per job). aiohttp still carries the streamed call (`stream_chat`, SSE) and httpx
the occasional ones (models, health, tokenize).

What it speaks: HTTP/1.1 with keep-alive to one origin (http or https), a request with a
Content-Length body, and an answer framed by Content-Length, by chunked transfer coding, or by
the end of the connection; informational (1xx) answers are skipped. Anything else malformed
is an `Http1Error`, as are refused, dropped and reset connections; a read that outlasts
`read_timeout` raises TimeoutError.

Connections: at most `max_connections` at once; an idle one is reused newest first, and one
the server has closed meanwhile is dropped unused. A request on a reused connection that
fails before any byte of the answer arrives (the server closed it just as it was taken) is
sent once more on a new connection, as browsers and aiohttp do: the server never read it.
A request cancelled midway closes its connection (its state is unknown).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BODY = 64 << 20        # an answer larger than this is refused (a lying or broken backend)
_HEAD_LIMIT = 64 << 10     # status line and headers


class Http1Error(Exception):
    """The connection failed or the answer was not HTTP/1.x as expected."""


@dataclass(slots=True)
class Answer:
    status: int
    reason: str
    body: bytes


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A reused connection failed before the answer began: the request may be sent again."""


class Http1Pool:
    """Keep-alive connections to the origin of `base_url`; `post(path, body)` per request."""

    def __init__(self, base_url: str, headers: dict[str, str], *, max_connections: int = 256,
                 connect_timeout: float = 10.0, read_timeout: float = 600.0, max_body: int = MAX_BODY) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        shown = f"[{self._host}]" if ":" in self._host else self._host
        default_port = self._port == (443 if self._ssl else 80)
        lines = [f"Host: {shown}" + ("" if default_port else f":{self._port}")]
        lines += [f"{name}: {value}" for name, value in headers.items()
                  if name.lower() not in ("host", "content-length", "connection", "transfer-encoding")]
        self._header_block = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Conn] = []
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_body = max_body
        self._closed = False

    async def post(self, path: str, body: bytes) -> Answer:
        """POST `body` (already-encoded JSON) to the base URL's path + `path`; the answer, any
        status. Http1Error on a transport or framing failure, TimeoutError past the read timeout."""
        request = (f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._header_block
                   + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        async with self._slots:
            for _ in range(2):
                conn, reused = await self._take()
                kept = False
                try:
                    answer, keep = await self._exchange(conn, request, reused)
                    if keep and not self._closed:
                        self._idle.append(conn)
                        kept = True
                    return answer
                except _Stale:
                    continue  # the server closed it as we took it: once more, on a new connection
                finally:
                    if not kept:
                        conn.close()
            raise Http1Error("the server closed a new connection before answering")

    async def aclose(self) -> None:
        """Close the idle connections; ones in use close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections ----------------------------------------------------------------------
    async def _take(self) -> tuple[_Conn, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, limit=_HEAD_LIMIT,
                    server_hostname=self._host if self._ssl else None)
        except (OSError, ssl.SSLError) as exc:
            raise Http1Error(f"cannot connect to {self._host}:{self._port}: {type(exc).__name__}: {exc}") from exc
        return _Conn(reader, writer), False

    async def _exchange(self, conn: _Conn, request: bytes, reused: bool) -> tuple[Answer, bool]:
        try:
            conn.writer.write(request)
            if conn.writer.transport.get_write_buffer_size() > (1 << 16):
                await conn.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise self._stale() if reused else Http1Error(f"connection lost while sending: {type(exc).__name__}") from exc
        async with asyncio.timeout(self._read_timeout):
            try:
                head = await self._read_head(conn.reader, reused)
                return await self._read_answer(conn.reader, head)
            except asyncio.IncompleteReadError as exc:
                raise Http1Error("the server closed the connection in the middle of its answer") from exc
            except asyncio.LimitOverrunError as exc:
                raise Http1Error("the answer's headers are too long") from exc
            except (ConnectionError, OSError) as exc:
                raise Http1Error(f"connection lost while reading: {type(exc).__name__}") from exc

    async def _read_head(self, reader: asyncio.StreamReader, reused: bool) -> bytes:
        """The answer's status line and headers; `_Stale` when a reused connection was closed
        before any of it arrived."""
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            nothing = not isinstance(exc, asyncio.IncompleteReadError) or exc.partial == b""
            if reused and nothing:
                raise self._stale() from exc
            raise

    def _stale(self) -> _Stale:
        """The server closed a kept connection: its other idle ones are likely closed too."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        return _Stale()

    # -- parsing --------------------------------------------------------------------------
    async def _read_answer(self, reader: asyncio.StreamReader, head: bytes) -> tuple[Answer, bool]:
        while True:
            lines = head[:-4].split(b"\r\n")
            version, status, reason = _status_line(lines[0])
            if status >= 200:
                break
            head = await reader.readuntil(b"\r\n\r\n")  # 1xx (100 Continue, 103 Early Hints): the answer follows
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise Http1Error(f"malformed header line {line[:60]!r}")
            key = name.strip().lower()
            headers[key] = headers[key] + b"," + value.strip() if key in headers else value.strip()
        connection = headers.get(b"connection", b"").lower()
        keep = (b"close" not in connection) if version == b"HTTP/1.1" else (b"keep-alive" in connection)
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = await self._read_chunked(reader)
        elif b"content-length" in headers:
            length = _length(headers[b"content-length"])
            if length > self._max_body:
                raise Http1Error(f"answer of {length} bytes is larger than {self._max_body}")
            body = await reader.readexactly(length)
        elif status in (204, 304):
            body = b""
        else:  # framed by the end of the connection (HTTP/1.0 style)
            chunks: list[bytes] = []
            size = 0
            while size <= self._max_body:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > self._max_body:
                raise Http1Error(f"answer larger than {self._max_body} bytes")
            body = b"".join(chunks)
            keep = False
        return Answer(status, reason, body), keep

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = _length(size_line[:-2].split(b";", 1)[0], base=16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields: none of ours
                return b"".join(parts)
            total += size
            if total > self._max_body:
                raise Http1Error(f"answer larger than {self._max_body} bytes")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise Http1Error("malformed chunked answer")


def _status_line(line: bytes) -> tuple[bytes, int, str]:
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise Http1Error(f"not an HTTP/1.x answer: {line[:60]!r}")
    return version, int(code), reason.decode("latin-1").strip()


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _length(text: bytes, base: int = 10) -> int:
    """A Content-Length (decimal) or chunk size (hex): digits only, no sign, no 0x."""
    text = text.strip()
    ok = text.isdigit() if base == 10 else (bool(text) and _HEX_DIGITS.issuperset(text))
    if not ok or len(text) > 16:
        raise Http1Error(f"malformed length {text[:30]!r}")
    return int(text, base)
