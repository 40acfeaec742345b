"""Gateway benchmark: the OpenAI door against calling PylonClient in-process, in one run.

    .venv/bin/python bench/gateway.py [--n-c1 30] [--n-c32 320] [--max-tokens 16] [--skip-vllm]

Every part runs as its own process on 127.0.0.1: `pylon relay`, `pylon serve` (on the 20 ms
OpenAI double, then on the local CPU vLLM), `pylon gateway`, and this script. For c in (1, 32)
the same prompts go (a) through an in-process `PylonClient.ask` (the baseline) and (b) as
`POST /v1/chat/completions` to the gateway (aiohttp client, keep-alive), in alternating
rounds so machine noise hits both. Figures: median added latency at c=1 (target <= 1 ms) and
the throughput ratio at c=32 (target >= 0.9x). Results: bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from jobs import PYLON, Proc, prompts, run_concurrently, start_double, start_provider, start_relay  # noqa: E402

from pylon.customer.client import PylonClient  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402

RESULTS = REPO / "bench" / "results" / "gateway.json"


async def in_process(relay: str, model: str, n: int, c: int, max_tokens: int) -> list[float]:
    texts = prompts(n)
    async with PylonClient([relay], keys=Keys.generate()) as client:
        async def one(i: int) -> None:
            await client.ask(texts[i], model=model, max_tokens=max_tokens, temperature=0.0, timeout=300)
        await one(0)
        wall, lat = await run_concurrently(n, c, one)
    return [n / wall, statistics.median(lat) * 1000]


async def via_gateway(base_url: str, model: str, n: int, c: int, max_tokens: int) -> list[float]:
    texts = prompts(n)
    connector = aiohttp.TCPConnector(limit=c + 4)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def one(i: int) -> None:
            body = {"model": model, "max_tokens": max_tokens, "temperature": 0.0,
                    "messages": [{"role": "user", "content": texts[i]}]}
            async with http.post(f"{base_url}/chat/completions", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"gateway answered {resp.status}: {await resp.text()}")
                await resp.read()
        await one(0)
        wall, lat = await run_concurrently(n, c, one)
    return [n / wall, statistics.median(lat) * 1000]


async def compare(label: str, relay: str, gateway: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c, n in ((1, args.n_c1), (32, args.n_c32)):
        base, gw = [], []
        for _ in range(args.rounds):
            base.append(await in_process(relay, model, n, c, args.max_tokens))
            gw.append(await via_gateway(gateway, model, n, c, args.max_tokens))
        b_rate = statistics.median(r[0] for r in base)
        g_rate = statistics.median(r[0] for r in gw)
        b_med = statistics.median(r[1] for r in base)
        g_med = statistics.median(r[1] for r in gw)
        out[f"c{c}"] = {"in_process_per_s": round(b_rate, 1), "gateway_per_s": round(g_rate, 1),
                        "ratio": round(g_rate / b_rate, 3), "in_process_median_ms": round(b_med, 2),
                        "gateway_median_ms": round(g_med, 2), "added_median_ms": round(g_med - b_med, 2)}
        print(f"{label:12} c={c:<3} in-process {b_rate:7.1f}/s  gateway {g_rate:7.1f}/s  "
              f"ratio {g_rate / b_rate:5.2f}x  added median {g_med - b_med:+6.2f} ms", flush=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-c1", type=int, default=30)
    ap.add_argument("--n-c32", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-double", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "params": vars(args), "targets": {"added_median_c1_ms": "<= 1", "ratio_c32": ">= 0.9"},
    }
    with tempfile.TemporaryDirectory(prefix="pylon-bench-gateway-") as tmpdir:
        tmp = Path(tmpdir)
        relay_proc, relay = start_relay(tmp)
        gateway = Proc([PYLON, "gateway", "--port", "0", "--relay", relay],
                       env={"PYLON_HOME": str(tmp / "gateway-home")})
        try:
            base_url = gateway.start("http://")
            backends: list[tuple[str, Any]] = []
            if not args.skip_double:
                backends.append(("double 20ms", None))
            if not args.skip_vllm:
                backends.append(("vllm", "vllm"))
            for label, kind in backends:
                server = double = provider = None
                try:
                    if kind is None:
                        double, url = start_double(20.0)
                        model = "double-model"
                    else:
                        from pylon.devstack.vllm import start_vllm

                        server = await asyncio.to_thread(start_vllm)
                        url, model = server.base_url, server.model
                    provider = start_provider(tmp, label.split()[0], relay, url, 64)
                    results[label.replace(" ", "_")] = await compare(label, relay, base_url, model, args)
                finally:
                    for proc in (provider, double):
                        if proc is not None:
                            proc.stop()
                    if server is not None:
                        await asyncio.to_thread(server.stop)
        finally:
            gateway.stop()
            relay_proc.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
