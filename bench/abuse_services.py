"""Abuse figures for the provider and the NWC service: the honest user's p50/p99 while a
swarm of fresh keys hits the service, as ratios against a quiet run in the same process run.

    .venv/bin/python bench/abuse_services.py

Provider: a returning customer asks 20 times (OpenAI double, 50 ms per answer, concurrency
4, a 64-job queue) quietly, then while 500 requests from fresh keys arrive at once (before
fair admission the queue filled and the customer was told "busy"). NWC: the connection's
owner asks for its balance 20 times, quietly, then while 500 fresh keys send requests; the
signed UNAUTHORIZED replies the swarm got are counted. Nothing is asserted here (tests/abuse
asserts the bounds); relay figures are in bench/abuse.py.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nexus_relay import running_relay  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.jobs.nip90 import JobRequest  # noqa: E402
from pylon.nostr.filters import Filter  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402
from pylon.provider.backends import OpenAIBackend  # noqa: E402
from pylon.provider.provider import Provider  # noqa: E402
from pylon.relay.pool import RelayPool  # noqa: E402
from tests.abuse.harness import count_until_quiet, nwc_strangers  # noqa: E402
from tests.e2e.helpers import wait_for  # noqa: E402
from tests.peers.openai_double import OpenAIDouble  # noqa: E402
from wallet import connect_wallet  # noqa: E402
from wallet.dev import DevWallet, fund  # noqa: E402
from wallet.nwc_proto import RESPONSE_KIND  # noqa: E402
from wallet.nwc_service import NwcService  # noqa: E402

ROUNDS = 20
SWARM = 500


def q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def line(name: str, quiet: list[float], loud: list[float], extra: str = "") -> None:
    ratio = q(loud, 0.99) / q(quiet, 0.99) if quiet else float("nan")
    print(f"- {name}: quiet p50 {q(quiet, .5):.0f} ms p99 {q(quiet, .99):.0f} ms; "
          f"under the swarm p50 {q(loud, .5):.0f} ms p99 {q(loud, .99):.0f} ms ({ratio:.1f}x) {extra}")


async def provider_bench(relay_url: str, tmp: Path) -> None:
    double = OpenAIDouble(latency_s=0.05).start_in_thread()
    backend = OpenAIBackend(double.base_url)
    provider = Provider([relay_url], backend, keys=Keys.generate(), db_path=tmp / "p.sqlite", concurrency=4,
                        max_pending=64)
    try:
        async with provider.running():
            async with PylonClient([relay_url], keys=Keys.generate()) as client:
                async def rounds() -> list[float]:
                    out = []
                    for i in range(ROUNDS):
                        start = time.perf_counter()
                        await client.ask(f"honest {i}", timeout=120)
                        out.append(time.perf_counter() - start)
                    return out

                quiet = await rounds()
                swarm = [JobRequest(messages=[{"role": "user", "content": f"swarm {i}"}]).to_event(Keys.generate())
                         for i in range(SWARM)]
                async with RelayPool([relay_url]) as pool:
                    flood = asyncio.gather(*(pool.publish(ev, timeout=30) for ev in swarm))
                    loud = await rounds()
                    await flood
                line("provider, returning customer vs 500 fresh keys", quiet, loud,
                     f"(swarm: {provider.stats.rejected} refused, fresh keys pending at most "
                     f"{provider.admission.fresh_limit})")
    finally:
        await backend.aclose()
        double.stop_thread()


async def nwc_bench(relay_url: str, tmp: Path) -> None:
    ledger = tmp / "dev.sqlite"
    fund(ledger, "svc", 50_000)
    service = NwcService(DevWallet(ledger, "svc"), [relay_url])
    conn = service.new_connection(name="owner")
    async with service.running():
        await asyncio.wait_for(service.ready.wait(), 10)
        owner = await connect_wallet(service.uri_for(conn))
        try:
            async def rounds() -> list[float]:
                out = []
                for _ in range(ROUNDS):
                    start = time.perf_counter()
                    await owner.balance()
                    out.append(time.perf_counter() - start)
                return out

            quiet = await rounds()
            strangers = nwc_strangers(service.pubkey, SWARM)
            async with RelayPool([relay_url]) as pool:
                replies = pool.subscribe([Filter.of(kinds=[RESPONSE_KIND], authors=[service.pubkey], limit=0)])
                await replies.open()
                flood = asyncio.gather(*(pool.publish(ev, timeout=30) for ev in strangers))
                loud = await rounds()
                await flood
                await wait_for(lambda: service.stats["unauthorized"] >= SWARM, what="the service to see the swarm")
                answered = await count_until_quiet(replies)
            line("NWC owner vs 500 fresh keys", quiet, loud,
                 f"(signed replies sent to the swarm: {answered - ROUNDS}, of {SWARM} requests)")
        finally:
            await owner.aclose()


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="abuse-services-") as name:
        tmp = Path(name)
        async with running_relay(tmp / "relay.sqlite") as relay:
            await provider_bench(relay.url, tmp)
            await nwc_bench(relay.url, tmp)


if __name__ == "__main__":
    asyncio.run(main())
