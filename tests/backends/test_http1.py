"""The provider's HTTP/1.1 client for non-streamed completions (pylon.provider.backends.http1).

Against the real servers (vLLM and the OpenAI double) it runs in every complete_chat test, and
tests/backends/test_keepalive.py holds it to one kept connection. Against a raw asyncio server written here (a DOUBLE for what those two never send): chunked
answers, answers ended by closing, `Connection: close`, a kept connection the server closed,
informational answers, and every malformed or oversize answer as one Http1Error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pylon.provider.backends import ChatRequest, OpenAIBackend
from pylon.provider.backends.errors import BackendUnavailable
from pylon.provider.backends.http1 import Http1Error, Http1Pool

pytestmark = pytest.mark.timeout(60)


# -- a raw HTTP server DOUBLE: each connection's requests answered by a script ----------------------

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # (request body, writer) -> keep open?


@contextlib.asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[tuple[str, list[int]]]:
    """127.0.0.1 server; yields (base URL, requests seen per connection)."""
    per_connection: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        me = len(per_connection) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                per_connection[me] += 1
                if not await reply(body, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", per_connection
    finally:
        server.close()
        await server.wait_closed()


def _json_reply(body: bytes) -> bytes:
    return json.dumps({"echo": json.loads(body)}).encode()


async def test_chunked_and_informational_answers():
    async def reply(body: bytes, writer: asyncio.StreamWriter) -> bool:
        data = _json_reply(body)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
        for i in range(0, len(data), 7):
            piece = data[i:i + 7]
            writer.write(f"{len(piece):X};ext=1\r\n".encode() + piece + b"\r\n")
        writer.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        return True

    async with raw_server(reply) as (url, seen):
        pool = Http1Pool(url, {"Accept": "application/json"})
        for i in range(3):
            answer = await pool.post("/chat/completions", json.dumps({"n": i}).encode())
            assert answer.status == 200 and json.loads(answer.body) == {"echo": {"n": i}}
        await pool.aclose()
    assert seen == [3]  # one connection, kept across chunked answers


async def test_close_delimited_and_connection_close_answers_open_a_new_connection():
    async def reply(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if json.loads(body)["n"] % 2:
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + _json_reply(body))  # ends with the connection
        else:
            data = _json_reply(body)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        return False

    async with raw_server(reply) as (url, seen):
        pool = Http1Pool(url, {})
        for i in range(4):
            answer = await pool.post("/chat/completions", json.dumps({"n": i}).encode())
            assert json.loads(answer.body) == {"echo": {"n": i}}
        await pool.aclose()
    assert seen == [1, 1, 1, 1]


@pytest.mark.parametrize("pause_s", [0.0, 0.05])
async def test_a_kept_connection_the_server_closed_is_not_a_failure(pause_s):
    async def reply(body: bytes, writer: asyncio.StreamWriter) -> bool:
        data = _json_reply(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        await writer.drain()
        return False  # closes after answering, without saying so (an idle timeout, a restart)

    async with raw_server(reply) as (url, seen):
        pool = Http1Pool(url, {})
        for i in range(3):
            await asyncio.sleep(pause_s)  # the close may or may not have reached us: both must work
            answer = await pool.post("/chat/completions", json.dumps({"n": i}).encode())
            assert json.loads(answer.body) == {"echo": {"n": i}}
        await pool.aclose()
    assert seen == [1, 1, 1]


@pytest.mark.parametrize("raw, why", [
    (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x answer"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "malformed length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", "malformed length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", "larger than"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "malformed chunked"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "middle of its answer"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "too long"),
])
async def test_malformed_answers_are_one_http1_error(raw, why):
    async def reply(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return False

    async with raw_server(reply) as (url, _):
        pool = Http1Pool(url, {}, max_body=1 << 20)
        with pytest.raises(Http1Error, match=why):
            await pool.post("/chat/completions", b"{}")
        await pool.aclose()


async def test_close_delimited_answer_over_the_size_cap_is_refused():
    async def reply(body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 300_000)
        return False

    async with raw_server(reply) as (url, _):
        pool = Http1Pool(url, {}, max_body=100_000)
        with pytest.raises(Http1Error, match="larger than"):
            await pool.post("/chat/completions", b"{}")
        await pool.aclose()


async def test_silence_past_the_read_timeout_and_a_refused_connect():
    async def reply(body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with raw_server(reply) as (url, _):
        pool = Http1Pool(url, {}, read_timeout=0.3)
        with pytest.raises(TimeoutError):
            await pool.post("/chat/completions", b"{}")
        await pool.aclose()
    with pytest.raises(Http1Error, match="cannot connect"):
        await Http1Pool("http://127.0.0.1:1/v1", {}).post("/chat/completions", b"{}")
    async with OpenAIBackend("http://127.0.0.1:1/v1") as backend:  # and as the provider sees it
        with pytest.raises(BackendUnavailable):
            await backend.complete_chat(ChatRequest(model="m", messages=[{"role": "user", "content": "x"}]))


async def test_request_carries_the_headers_and_the_base_path():
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool(f"http://127.0.0.1:{port}/api/v1/", {"Authorization": "Bearer k", "Host": "evil"})
    answer = await pool.post("/chat/completions", b"{}")
    await pool.aclose()
    server.close()
    await server.wait_closed()
    assert (answer.status, answer.reason, answer.body) == (201, "Created", b"{}")
    lines = heads[0].split(b"\r\n")
    assert lines[0] == b"POST /api/v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}".encode() in lines and b"Authorization: Bearer k" in lines
    assert b"Host: evil" not in lines and b"Content-Length: 2" in lines
