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
