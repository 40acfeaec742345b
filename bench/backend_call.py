"""The provider's per-job backend call: aiohttp against pylon.provider.backends.http1, in one run.

    .venv/bin/python bench/backend_call.py [--calls 3000] [--rounds 3] [--concurrency 1]

Runs the OpenAI server double (tests/peers/openai_double.py, instant) and sends the same
non-streamed /chat/completions body through both clients, alternating rounds: aiohttp's
`ClientSession.post` + `read()` (what `OpenAIBackend.complete_chat` used before) and
`Http1Pool.post` (what it uses now), each over keep-alive connections, at `--concurrency`
requests at once. Prints this process's CPU per call (not the server's) and wall time per
call, medians over rounds, and the ratio http1/aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import aiohttp  # noqa: E402

from jobs import Proc  # noqa: E402
from pylon.nostr.jsonwire import dumps_bytes, loads  # noqa: E402
from pylon.provider.backends.http1 import Http1Pool  # noqa: E402

BODY = dumps_bytes({"model": "m", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 16})
HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


async def _timed(call, calls: int, concurrency: int) -> tuple[float, float]:
    for _ in range(50):  # warm: connections open, code paths hot
        await call()
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - c0) / calls * 1e6, (time.perf_counter() - t0) / calls * 1e6


async def with_aiohttp(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        async def call() -> None:
            async with session.post(url + "/chat/completions", data=BODY) as resp:
                loads(await resp.read())
        return await _timed(call, calls, concurrency)


async def with_http1(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    pool = Http1Pool(url, HEADERS)

    async def call() -> None:
        loads((await pool.post("/chat/completions", BODY)).body)
    try:
        return await _timed(call, calls, concurrency)
    finally:
        await pool.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    double = Proc([sys.executable, str(REPO / "tests" / "peers" / "openai_double.py"), "--port", "0", "--latency-ms", "0"])
    url = double.start("http://")
    results: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "http1": []}
    try:
        for r in range(args.rounds):
            order = [("aiohttp", with_aiohttp), ("http1", with_http1)]
            for name, run in order if r % 2 == 0 else order[::-1]:
                cpu, wall = asyncio.run(run(url, args.calls, args.concurrency))
                results[name].append((cpu, wall))
                print(f"round {r + 1} {name:8} CPU {cpu:6.0f} us/call, wall {wall:6.0f} us/call", flush=True)
    finally:
        double.stop()
    med = {name: (statistics.median(c for c, _ in rs), statistics.median(w for _, w in rs)) for name, rs in results.items()}
    print(f"median: aiohttp CPU {med['aiohttp'][0]:.0f} us, http1 {med['http1'][0]:.0f} us (x{med['http1'][0] / med['aiohttp'][0]:.2f}); "
          f"wall {med['aiohttp'][1]:.0f} -> {med['http1'][1]:.0f} us per call")


if __name__ == "__main__":
    main()
