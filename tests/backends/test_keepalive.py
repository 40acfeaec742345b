"""Completions, streamed or not, give their connection back to the pool (against vLLM and the double).

Why it matters: a stream left unread after `[DONE]` gets its connection closed, so every job
would pay a TCP connect + close on both ends (CPU the provider takes from a backend on the
same cores). Observed from outside the client: the set of local ports this process opened to
the server (/proc/net/tcp), which a reconnect would grow.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pylon.provider.backends import ChatRequest, OpenAIBackend

_TCP = Path("/proc/net/tcp")


def _local_ports_to(server_port: int) -> set[int]:
    """Local ports of IPv4 sockets (any state but LISTEN) whose remote port is server_port."""
    ports = set()
    for line in _TCP.read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(remote.split(":")[1], 16) == server_port and state != "0A":
            ports.add(int(local.split(":")[1], 16))
    return ports


@pytest.mark.skipif(not _TCP.exists(), reason="needs Linux /proc/net/tcp")
@pytest.mark.parametrize("call", ["stream_chat", "complete_chat"])  # aiohttp; pylon.provider.backends.http1
async def test_sequential_calls_reuse_one_connection(backend_peer, call):
    port = urlsplit(backend_peer.base_url).port
    assert port is not None
    before = _local_ports_to(port)
    async with OpenAIBackend(backend_peer.base_url) as backend:
        for i in range(4):
            req = ChatRequest(model=backend_peer.model, messages=[{"role": "user", "content": f"count {i}"}],
                              max_tokens=4, temperature=0.0)
            if call == "stream_chat":
                final = [c async for c in backend.stream_chat(req)][-1]
            else:
                final = await backend.complete_chat(req)
            assert final.finish_reason in ("stop", "length")
        opened = _local_ports_to(port) - before
    assert len(opened) == 1, f"expected one pooled connection, saw {len(opened)}"
