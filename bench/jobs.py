"""Jobs benchmark: Pylon's whole path against the backend called directly, in one run.

    .venv/bin/python bench/jobs.py [--jobs-c1 30] [--jobs-c32 320] [--max-tokens 16]
                                   [--skip-vllm] [--skip-memory] [--backend URL]

Every part runs as its own process on 127.0.0.1, as in production: `pylon relay` (embedded
nexus relay), `pylon serve` (the provider), the backend (the local CPU vLLM with the tiny
model, or the OpenAI server double), and this script as the customer (PylonClient).

For each backend and concurrency c in (1, 32), with the same prompts, max_tokens and
temperature 0 on both paths:
  * baseline: requests/s and median latency of chat completions sent straight to the backend
    (OpenAIBackend.complete_chat: the call the provider makes for a job that is not streamed,
    as these are; it was stream_chat before the provider stopped streaming them), measured before and
    after the Pylon run and averaged (after a warm-up of both paths);
  * pylon: jobs/s and median latency of PylonClient.ask (client -> relay -> provider ->
    backend -> relay -> client);
  * ratio = pylon jobs/s / baseline requests/s; added latency = median(pylon) - median(direct).
The double (fixed 20 ms latency) isolates Pylon's own overhead. Memory: RSS of the `pylon
serve` process (without the backend) while 256 jobs are in flight on a double with a long
latency. Results: bench/results/jobs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pylon.provider.backends import ChatRequest, OpenAIBackend  # noqa: E402
from pylon.customer.client import PylonClient  # noqa: E402
from pylon.nostr.keys import Keys  # noqa: E402

RESULTS = REPO / "bench" / "results" / "jobs.json"
PYLON = str(Path(sys.executable).parent / "pylon")


class Proc:
    """A child process in its own session whose first stdout line is what we wait for."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv, self.env = argv, env
        self.proc: subprocess.Popen | None = None

    def start(self, prefix: str = "", timeout: float = 90.0) -> str:
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **(self.env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.argv[:3]} exited before it was ready")
            if line.startswith(prefix):
                return line.strip()
        raise RuntimeError(f"{self.argv[:3]} not ready within {timeout}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields 14, 15 -> 11, 12
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process ("client" is this process)."""
    out = {name: cpu_s(pid) for name, pid in pids.items()}
    out["client"] = cpu_s(os.getpid())
    return out


def cpu_ms_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU ms per job of each process between two snapshots, plus Pylon's total (without the backend)."""
    per = {name: round((after[name] - before[name]) * 1000 / jobs, 2) for name in before}
    per["pylon_total"] = round(sum(v for k, v in per.items() if k != "backend"), 2)
    return per


def prompts(n: int) -> list[str]:
    return [f"Question {i}: tell me something about the number {i}." for i in range(n)]


async def run_concurrently(n: int, c: int, one) -> tuple[float, list[float]]:
    """Run one(i) for i < n with at most c at once; (wall seconds, per-call latencies)."""
    sem = asyncio.Semaphore(c)
    latencies: list[float] = []

    async def guarded(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    return time.perf_counter() - t0, latencies


async def direct(base_url: str, model: str, n: int, c: int, max_tokens: int) -> dict[str, Any]:
    texts = prompts(n)
    async with OpenAIBackend(base_url) as backend:
        async def one(i: int) -> None:
            req = ChatRequest(model=model, messages=[{"role": "user", "content": texts[i]}],
                              max_tokens=max_tokens, temperature=0.0)
            await backend.complete_chat(req)
        await one(0)  # warm the connection pool
        wall, lat = await run_concurrently(n, c, one)
    return {"per_s": n / wall, "median_ms": statistics.median(lat) * 1000, "n": n}


async def through_pylon(relay: str, n: int, c: int, max_tokens: int) -> dict[str, Any]:
    texts = prompts(n)
    async with PylonClient([relay], keys=Keys.generate()) as client:
        async def one(i: int) -> None:
            await client.ask(texts[i], max_tokens=max_tokens, temperature=0.0, timeout=300)
        await one(0)
        wall, lat = await run_concurrently(n, c, one)
    return {"per_s": n / wall, "median_ms": statistics.median(lat) * 1000, "n": n}


def start_relay(tmp: Path) -> tuple[Proc, str]:
    relay = Proc([PYLON, "relay", "--port", "0", "--db", str(tmp / "relay.sqlite")],
                 env={"PYLON_HOME": str(tmp / "relay-home")})
    return relay, relay.start("ws://")


def start_provider(tmp: Path, name: str, relay: str, backend: str, concurrency: int) -> Proc:
    home = tmp / f"provider-{name}"
    provider = Proc([PYLON, "serve", "--relay", relay, "--backend", backend, "--concurrency", str(concurrency)],
                    env={"PYLON_HOME": str(home)})
    provider.start("serving as")
    return provider


def start_double(latency_ms: float) -> tuple[Proc, str]:
    double = Proc([sys.executable, str(REPO / "tests" / "peers" / "openai_double.py"), "--port", "0",
                   "--latency-ms", str(latency_ms)])
    return double, double.start("http://")


async def compare(label: str, tmp: Path, relay: str, backend_url: str, model: str, args: argparse.Namespace,
                  pids: dict[str, int]) -> dict:
    provider = start_provider(tmp, label, relay, backend_url, 32)
    pids = {**pids, "provider": provider.pid}
    out: dict[str, Any] = {}
    try:
        await direct(backend_url, model, 64, 32, args.max_tokens)  # warm-up (vLLM is slow on first batches)
        await through_pylon(relay, 64, 32, args.max_tokens)
        for c, n in ((1, args.jobs_c1), (32, args.jobs_c32)):
            # the baseline is measured before and after Pylon and averaged, so a drift of the
            # backend (or of the neighbours on this machine) does not favour either side
            before = await direct(backend_url, model, n, c, args.max_tokens)
            cpu0 = cpu_snapshot(pids)
            pylon = await through_pylon(relay, n, c, args.max_tokens)
            cpu = cpu_ms_per_job(cpu0, cpu_snapshot(pids), n)
            after = await direct(backend_url, model, n, c, args.max_tokens)
            base = {"per_s": (before["per_s"] + after["per_s"]) / 2,
                    "median_ms": (before["median_ms"] + after["median_ms"]) / 2}
            row = {
                "direct_requests_per_s": round(base["per_s"], 2), "pylon_jobs_per_s": round(pylon["per_s"], 2),
                "ratio": round(pylon["per_s"] / base["per_s"], 3),
                "direct_median_ms": round(base["median_ms"], 2), "pylon_median_ms": round(pylon["median_ms"], 2),
                "added_latency_median_ms": round(pylon["median_ms"] - base["median_ms"], 2), "jobs": n,
                "cpu_ms_per_job": cpu,
            }
            out[f"c{c}"] = row
            print(f"[{label}] c={c:<3} direct {row['direct_requests_per_s']:8.1f}/s  pylon "
                  f"{row['pylon_jobs_per_s']:8.1f}/s  ratio {row['ratio']:.3f}  median direct "
                  f"{row['direct_median_ms']:.1f} ms pylon {row['pylon_median_ms']:.1f} ms  added "
                  f"{row['added_latency_median_ms']:.1f} ms", flush=True)
            print(f"[{label}] c={c:<3} CPU ms/job: " + "  ".join(f"{k} {v:.2f}" for k, v in cpu.items()), flush=True)
    finally:
        provider.stop()
    return out


async def memory(tmp: Path, relay: str, jobs: int = 256, latency_s: float = 20.0) -> dict[str, Any]:
    double, url = start_double(latency_s * 1000)
    provider = start_provider(tmp, "memory", relay, url, jobs)
    try:
        idle = rss_mb(provider.pid)
        processing = 0
        all_in = asyncio.Event()

        def progress(p) -> None:
            nonlocal processing
            if p.stage == "processing":
                processing += 1
                if processing >= jobs:
                    all_in.set()

        async with PylonClient([relay], keys=Keys.generate()) as client:
            tasks = [asyncio.create_task(client.ask(f"memory job {i} " + "x" * 200, max_tokens=64,
                                                    timeout=latency_s * 4, on_progress=progress))
                     for i in range(jobs)]
            await asyncio.wait_for(all_in.wait(), latency_s * 0.8)
            samples = []
            while not all(t.done() for t in tasks) and len(samples) < 20:
                samples.append(rss_mb(provider.pid))
                await asyncio.sleep(0.25)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        ok = sum(1 for r in results if not isinstance(r, BaseException))
        row = {"jobs_in_flight": jobs, "rss_idle_mb": round(idle, 1), "rss_in_flight_max_mb": round(max(samples), 1),
               "rss_peak_hwm_mb": round(rss_mb(provider.pid, "VmHWM"), 1), "jobs_completed": ok}
        print(f"[memory] provider RSS idle {row['rss_idle_mb']} MB, with {jobs} in flight "
              f"{row['rss_in_flight_max_mb']} MB (peak {row['rss_peak_hwm_mb']} MB); {ok}/{jobs} completed",
              flush=True)
        return row
    finally:
        provider.stop()
        double.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs-c1", type=int, default=30)
    ap.add_argument("--jobs-c32", type=int, default=320)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-double", action="store_true")
    ap.add_argument("--backend", help="a running OpenAI-compatible server instead of the local vLLM")
    ap.add_argument("--backend-model", help="model name at --backend (default: its first)")
    args = ap.parse_args()

    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "params": vars(args), "targets": {"ratio_c32": ">= 0.9", "added_latency_c1_ms": "<= 10",
                                          "provider_rss_mb_256_in_flight": "<= 150"},
    }
    with tempfile.TemporaryDirectory(prefix="pylon-bench-jobs-") as tmpdir:
        tmp = Path(tmpdir)
        relay_proc, relay = start_relay(tmp)
        try:
            if not args.skip_double:
                double, url = start_double(20.0)
                try:
                    results["double_20ms"] = await compare("double 20ms", tmp, relay, url, "double-model", args,
                                                           {"relay": relay_proc.pid, "backend": double.pid})
                finally:
                    double.stop()
            if not args.skip_vllm:
                server = None
                try:
                    if args.backend:
                        url = args.backend
                        async with OpenAIBackend(url) as b:
                            model = args.backend_model or (await b.list_models())[0]
                    else:
                        from pylon.devstack.vllm import start_vllm

                        server = await asyncio.to_thread(start_vllm)
                        url, model = server.base_url, server.model
                    results["vllm"] = await compare("vllm", tmp, relay, url, model, args, {"relay": relay_proc.pid})
                finally:
                    if server is not None:
                        await asyncio.to_thread(server.stop)
            if not args.skip_memory:
                results["memory"] = await memory(tmp, relay)
        finally:
            relay_proc.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
