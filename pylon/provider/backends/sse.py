"""Server-sent events, just enough of the spec for OpenAI-style streams.

Why our own: the servers we talk to differ in small ways (vLLM sends `data: {...}`, some
send `data:{...}` without the space, some interleave `: ping` comments or `event:` lines),
and the spec's rule is simple: `data:` lines accumulate until a blank line ends the event.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield the data payload of each event in a stream of text lines (without newlines)."""
    buf: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if buf:
                yield "\n".join(buf)
                buf = []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive ping
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            buf.append(value)
        # event:, id:, retry: carry nothing we need for chat completions
    if buf:
        yield "\n".join(buf)


class SSEDecoder:
    """Incremental SSE parser over raw bytes: feed() each network chunk, get whole payloads.

    Why beside iter_sse_data: the provider parses every streamed token through this, and
    splitting bytes ourselves is several times cheaper than httpx's text decoding + line
    iteration plus an async generator hop per line. Same rules: `data:` lines accumulate
    until a blank line; comments and other fields are skipped; lines end in \\n, \\r\\n or \\r.
    Payloads are UTF-8 bytes (json.loads takes them as they are).
    """

    __slots__ = ("_tail", "_data")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Payloads of the events completed by `chunk` (possibly none)."""
        buf = self._tail + chunk if self._tail else chunk
        lines = buf.splitlines(keepends=True)
        if lines and (not lines[-1].endswith((b"\n", b"\r")) or lines[-1].endswith(b"\r")):
            # an unfinished line, or one ending in \r whose \n may be in the next chunk
            self._tail = lines.pop()
        else:
            self._tail = b""
        return self._lines(lines)

    def close(self) -> list[bytes]:
        """Payloads still pending when the stream ended (an unterminated last event)."""
        tail, self._tail = self._tail, b""
        out = self._lines([tail]) if tail else []
        if self._data:
            out.append(b"\n".join(self._data))
            self._data = []
        return out

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        data = self._data
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    out.append(b"\n".join(data))
                    data.clear()
                continue
            if line[0] == 0x3A:  # ":" comment / keep-alive ping
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value[:1] == b" " else value)
            # event:, id:, retry: carry nothing we need for chat completions
        return out
