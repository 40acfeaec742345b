"""Relay benchmark: nexus_relay vs rust-nostr LocalRelay vs PyPI nostr-relay 1.14, in one run.

    .venv/bin/python bench/relay.py [--events 4000] [--skip-python-peer] [--skip-memory]

Measures, with the same pre-signed events and the same client code for every relay:
  * ingest: events/s accepted (signatures verified by the relay), pipelined over several
    connections (window of in-flight EVENTs per connection), plus OK latency under that load;
  * OK latency p50/p99 unloaded (one EVENT at a time, one connection);
  * fan-out latency p50/p99 (publish -> EVENT frame at the subscriber) to 200 live
    subscriptions with mixed filters (kinds, authors, tags, combinations), checking that each
    subscription got exactly the events its filters match;
  * memory: RSS of a `pylon relay` subprocess holding 1,000 connections x 10 subscriptions.
Every relay runs as its own subprocess on 127.0.0.1 and is stopped at the end; all loops are
bounded by timeouts. Results: bench/results/relay.json (ratios vs the Python peer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pylon.nostr import Event, Filter, Keys  # noqa: E402

PEER_VENV = REPO / ".peers" / "nostr-relay-venv"
RESULTS = REPO / "bench" / "results" / "relay.json"

RUST_RELAY_SCRIPT = r"""
import asyncio, signal
import nostr_sdk as n

async def main():
    relay = (n.LocalRelayBuilder().addr("127.0.0.1")
             .rate_limit(n.RateLimit(max_reqs=1_000_000, notes_per_minute=1_000_000_000)).build())
    await relay.run()
    print(str(await relay.url()).rstrip("/"), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    relay.shutdown()

asyncio.run(main())
"""


# ----------------------------------------------------------------------------- helpers
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children (MB)."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(p) for p in out]
    except FileNotFoundError:  # pragma: no cover
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


class RelayProcess:
    """A relay in its own process group, started and stopped by the bench."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict | None = None,
                 url: str | None = None) -> None:
        self.name, self.argv, self.cwd, self.env, self.url = name, argv, cwd, env, url
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float = 60.0) -> str:
        self.proc = subprocess.Popen(
            # stdout is read only for the URL line; a relay whose URL is known must not write into
            # a pipe nobody drains (it blocks once the pipe buffer fills with its log lines)
            self.argv, cwd=self.cwd, env={**os.environ, **(self.env or {})},
            stdout=subprocess.PIPE if self.url is None else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        if self.url is None:  # the relay prints its URL first
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
            if not line.startswith("ws://"):
                self.stop()
                raise RuntimeError(f"{self.name} did not print its URL: {line!r}")
            self.url = line.strip()
        deadline = time.monotonic() + timeout
        while True:  # ready when a websocket handshake succeeds
            try:
                async with websockets.connect(self.url, open_timeout=2):
                    break
            except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not come up at {self.url}")
                await asyncio.sleep(0.2)
        return self.url

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


def nexus_process(tmp: Path, name: str = "nexus") -> RelayProcess:
    db = tmp / f"{name}.sqlite"
    return RelayProcess(name, [sys.executable, "-m", "cli.main", "relay", "--port", "0", "--db", str(db),
                               "--events-per-second", "0"], cwd=REPO, env={"PYLON_HOME": str(tmp)})


def rust_process(tmp: Path) -> RelayProcess:
    return RelayProcess("rust-nostr LocalRelay", [sys.executable, "-c", RUST_RELAY_SCRIPT], cwd=tmp)


def ensure_python_peer() -> Path:
    """PyPI nostr-relay 1.14 in its own venv (it pins old packages)."""
    exe = PEER_VENV / "bin" / "nostr-relay"
    if not exe.exists():
        print("installing nostr-relay 1.14 into", PEER_VENV, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "nostr-relay==1.14"], check=True,
                       timeout=600)
    return exe


def python_peer_process(tmp: Path) -> RelayProcess:
    exe = ensure_python_peer()
    import glob

    default_cfg = Path(glob.glob(str(PEER_VENV / "lib" / "python*" / "site-packages" / "nostr_relay" / "config.yaml"))[0])
    port = free_port()
    text = default_cfg.read_text()
    text = text.replace("sqlite+aiosqlite:///nostr.sqlite3", f"sqlite+aiosqlite:///{tmp / 'nostr-relay.sqlite3'}")
    text = text.replace("bind: 127.0.0.1:6969", f"bind: 127.0.0.1:{port}")
    text = text.replace("loglevel: info", "loglevel: warning")
    cfg = tmp / "nostr-relay.yaml"
    cfg.write_text(text)
    return RelayProcess("nostr-relay 1.14 (Python)", [str(exe), "-c", str(cfg), "serve", "--use-uvicorn"],
                        cwd=tmp, url=f"ws://127.0.0.1:{port}")


# ----------------------------------------------------------------------------- workloads
def make_events(n: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    authors = [Keys.generate() for _ in range(50)]
    now = int(time.time())
    events = []
    for i in range(n):
        k = authors[i % len(authors)]
        tags = [["t", f"topic{rng.randrange(20)}"]]
        if rng.random() < 0.5:
            tags.append(["p", authors[rng.randrange(len(authors))].public_key])
        if rng.random() < 0.3:
            tags.append(["e", f"{rng.getrandbits(256):064x}"])
        events.append(Event.build(k, 1, f"bench event {i} " + "x" * rng.randrange(40, 300), tags,
                                  created_at=now - rng.randrange(0, 600)))
    return events


async def ingest(url: str, events: list[Event], conns: int = 4, window: int = 256, timeout: float = 120.0) -> dict:
    """Pipelined publish over `conns` connections; events/s = accepted / wall time."""
    frames = [json.dumps(["EVENT", e.to_dict()], separators=(",", ":"), ensure_ascii=False) for e in events]
    ids = [e.id for e in events]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    accepted = rejected = 0
    reasons: dict[str, int] = {}

    async def run_conn(ws, idxs: list[int]) -> None:
        nonlocal accepted, rejected
        slots = asyncio.Semaphore(window)
        remaining = len(idxs)
        done = asyncio.Event()
        if remaining == 0:
            return

        async def reader() -> None:
            nonlocal remaining, accepted, rejected
            async for raw in ws:
                msg = json.loads(raw)
                if msg[0] != "OK":
                    continue
                t0 = sent_at.get(msg[1])
                if t0 is not None:
                    latencies.append(time.perf_counter() - t0)
                if msg[2]:
                    accepted += 1
                else:
                    rejected += 1
                    reason = (msg[3] if len(msg) > 3 else "").split(":")[0]
                    reasons[reason] = reasons.get(reason, 0) + 1
                slots.release()
                remaining -= 1
                if remaining == 0:
                    done.set()
                    return

        task = asyncio.create_task(reader())
        for i in idxs:
            await slots.acquire()
            sent_at[ids[i]] = time.perf_counter()
            await ws.send(frames[i])
        await done.wait()
        await task

    sockets = [await websockets.connect(url, max_size=None, compression=None) for _ in range(conns)]
    try:
        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(run_conn(ws, list(range(c, len(events), conns))) for c, ws in enumerate(sockets))),
            timeout)
        elapsed = time.perf_counter() - start
    finally:
        for ws in sockets:
            await ws.close()
    return {
        "events": len(events), "connections": conns, "window_per_connection": window,
        "accepted": accepted, "rejected": rejected, "rejection_reasons": reasons,
        "seconds": round(elapsed, 3), "events_per_s": round(accepted / elapsed, 1),
        "ok_latency_under_load_p50_ms": ms(pct(latencies, 0.5)), "ok_latency_under_load_p99_ms": ms(pct(latencies, 0.99)),
    }


async def ok_latency(url: str, events: list[Event], timeout: float = 60.0) -> dict:
    """One EVENT at a time on one connection: the latency a single client sees."""
    lat: list[float] = []
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        async def run() -> None:
            for ev in events:
                frame = json.dumps(["EVENT", ev.to_dict()], separators=(",", ":"), ensure_ascii=False)
                t0 = time.perf_counter()
                await ws.send(frame)
                while True:
                    msg = json.loads(await ws.recv())
                    if msg[0] == "OK" and msg[1] == ev.id:
                        lat.append(time.perf_counter() - t0)
                        break
        await asyncio.wait_for(run(), timeout)
    return {"samples": len(lat), "p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99)),
            "mean_ms": ms(statistics.fmean(lat) if lat else None)}


async def fanout(url: str, n_subs: int = 200, n_conns: int = 20, n_events: int = 200, interval: float = 0.005,
                 timeout: float = 60.0) -> dict:
    """Publish paced events; measure publish->delivery latency at 200 mixed-filter subscriptions."""
    rng = random.Random(7)
    nonce = f"{rng.getrandbits(32):08x}{int(time.time())}"
    authors = [Keys.generate() for _ in range(10)]
    topics = [f"fan-{nonce}-{i}" for i in range(10)]
    kinds = [1111, 1112]
    filters: list[dict] = []
    for i in range(n_subs):
        shape = i % 5
        if shape == 0:
            filters.append({"kinds": [kinds[i % 2]]})
        elif shape == 1:
            filters.append({"authors": [authors[i % 10].public_key]})
        elif shape == 2:
            filters.append({"#t": [topics[i % 10]]})
        elif shape == 3:
            filters.append({"authors": [authors[i % 10].public_key, authors[(i + 3) % 10].public_key], "kinds": [1111]})
        else:
            filters.append({"kinds": kinds, "#t": [topics[i % 10], topics[(i + 1) % 10]]})
    now = int(time.time())
    events = []
    for j in range(n_events):
        k = authors[rng.randrange(10)]
        events.append(Event.build(k, kinds[rng.randrange(2)], f"fanout {j}",
                                  [["t", topics[rng.randrange(10)]]], created_at=now))
    parsed = [Filter.parse(f) for f in filters]
    expected = {(e.id, i) for e in events for i, f in enumerate(parsed) if f.matches(e)}

    sent_at: dict[str, float] = {}
    got: dict[tuple[str, int], float] = {}
    all_in = asyncio.Event()
    sockets = [await websockets.connect(url, max_size=None, compression=None) for _ in range(n_conns)]
    publisher = await websockets.connect(url, max_size=None, compression=None)
    readers: list[asyncio.Task] = []
    try:
        eose_left = n_subs
        eose_done = asyncio.Event()

        async def reader(ws) -> None:
            nonlocal eose_left
            async for raw in ws:
                now_t = time.perf_counter()
                msg = json.loads(raw)
                if msg[0] == "EVENT":
                    key = (msg[2]["id"], int(msg[1][1:]))
                    if key not in got:
                        got[key] = now_t
                        if len(got) >= len(expected):
                            all_in.set()
                elif msg[0] == "EOSE":
                    eose_left -= 1
                    if eose_left == 0:
                        eose_done.set()

        for ws in sockets:
            readers.append(asyncio.create_task(reader(ws)))
        for i, flt in enumerate(filters):
            await sockets[i % n_conns].send(json.dumps(["REQ", f"s{i}", flt]))
        await asyncio.wait_for(eose_done.wait(), timeout)

        async def drain_publisher() -> None:
            async for _ in publisher:
                pass

        drain = asyncio.create_task(drain_publisher())
        for ev in events:
            frame = json.dumps(["EVENT", ev.to_dict()], separators=(",", ":"), ensure_ascii=False)
            sent_at[ev.id] = time.perf_counter()
            await publisher.send(frame)
            await asyncio.sleep(interval)
        try:
            await asyncio.wait_for(all_in.wait(), 10)
        except asyncio.TimeoutError:
            pass
        drain.cancel()
    finally:
        for t in readers:
            t.cancel()
        for ws in [*sockets, publisher]:
            await ws.close()
    lat = [t - sent_at[eid] for (eid, _), t in got.items() if eid in sent_at]
    return {
        "subscriptions": n_subs, "connections": n_conns, "events": n_events, "interval_ms": interval * 1000,
        "expected_deliveries": len(expected), "deliveries": len(got),
        "missing": len(expected - set(got)), "unexpected": len(set(got) - expected),
        "p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99)), "max_ms": ms(max(lat) if lat else None),
    }


async def memory(tmp: Path, n_conns: int = 1000, subs_per_conn: int = 10) -> dict:
    """RSS of a fresh `pylon relay` process holding n_conns connections x subs_per_conn REQs."""
    relay = nexus_process(tmp, "nexus-memory")
    url = await relay.start()
    assert relay.proc is not None
    pid = relay.proc.pid
    rng = random.Random(3)
    pubkeys = [Keys.generate().public_key for _ in range(200)]
    sockets: list = []
    try:
        idle = rss_mb(pid)
        gate = asyncio.Semaphore(50)

        async def open_one(c: int):
            async with gate:
                ws = await websockets.connect(url, max_size=None, compression=None, open_timeout=30)
                for s in range(subs_per_conn):
                    shape = (c + s) % 4
                    flt = ({"kinds": [rng.randrange(1, 40000)]} if shape == 0 else
                           {"authors": rng.sample(pubkeys, 3)} if shape == 1 else
                           {"#t": [f"mem{rng.randrange(1000)}"], "kinds": [1]} if shape == 2 else
                           {"#p": [rng.choice(pubkeys)], "since": int(time.time())})
                    await ws.send(json.dumps(["REQ", f"m{s}", flt]))
                eose = 0
                while eose < subs_per_conn:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if msg[0] == "EOSE":
                        eose += 1
                    elif msg[0] == "CLOSED":
                        raise RuntimeError(f"subscription refused: {msg}")
                return ws

        t0 = time.perf_counter()
        sockets = await asyncio.wait_for(asyncio.gather(*(open_one(c) for c in range(n_conns))), 180)
        opened = time.perf_counter() - t0
        held = rss_mb(pid)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        relay.stop()
    return {"connections": n_conns, "subscriptions_per_connection": subs_per_conn,
            "rss_idle_mb": idle, "rss_with_connections_mb": held,
            "kb_per_connection": round((held - idle) * 1024 / n_conns, 1), "open_seconds": round(opened, 2)}


# ----------------------------------------------------------------------------- main
async def bench_relay(proc: RelayProcess, ingest_events: list[Event], latency_events: list[Event]) -> dict:
    url = await proc.start()
    try:
        result: dict = {"url": url}
        result["ingest"] = await ingest(url, ingest_events)
        result["ok_latency"] = await ok_latency(url, latency_events)
        result["fanout"] = await fanout(url)
        if proc.proc is not None:
            result["rss_after_mb"] = rss_mb(proc.proc.pid)
        return result
    finally:
        proc.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--skip-python-peer", action="store_true")
    parser.add_argument("--skip-rust", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    t_start = time.perf_counter()
    print(f"signing {args.events + 300} events ...", flush=True)
    ingest_events = make_events(args.events, seed=1)
    latency_events = make_events(300, seed=2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "relays": {}}
    try:
        contenders = [("nexus", nexus_process(tmp))]
        if not args.skip_rust:
            contenders.append(("rust_local_relay", rust_process(tmp)))
        if not args.skip_python_peer:
            contenders.append(("python_nostr_relay", python_peer_process(tmp)))
        for key, proc in contenders:
            print(f"--- {proc.name}", flush=True)
            try:
                results["relays"][key] = await bench_relay(proc, ingest_events, latency_events)
            except Exception as exc:  # report and carry on with the others
                results["relays"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(results["relays"][key], indent=1), flush=True)
        if not args.skip_memory:
            print("--- memory: 1,000 connections x 10 subscriptions on `pylon relay`", flush=True)
            results["memory"] = await memory(tmp)
            print(json.dumps(results["memory"], indent=1), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    relays = results["relays"]

    def rate(key: str) -> float | None:
        return relays.get(key, {}).get("ingest", {}).get("events_per_s")

    nexus_rate, py_rate, rust_rate = rate("nexus"), rate("python_nostr_relay"), rate("rust_local_relay")
    results["ratios"] = {
        "nexus_vs_python_peer_ingest": round(nexus_rate / py_rate, 1) if nexus_rate and py_rate else None,
        "rust_vs_python_peer_ingest": round(rust_rate / py_rate, 1) if rust_rate and py_rate else None,
        "nexus_vs_rust_ingest": round(nexus_rate / rust_rate, 2) if nexus_rate and rust_rate else None,
    }
    nexus = relays.get("nexus", {})
    results["targets"] = {
        "ingest_ge_3000_eps": bool(nexus_rate and nexus_rate >= 3000),
        "ok_p50_le_1ms": bool(nexus.get("ok_latency", {}).get("p50_ms") is not None
                              and nexus["ok_latency"]["p50_ms"] <= 1.0),
        "fanout_p99_le_10ms": bool(nexus.get("fanout", {}).get("p99_ms") is not None
                                   and nexus["fanout"]["p99_ms"] <= 10.0),
        "ge_10x_python_peer": bool(results["ratios"]["nexus_vs_python_peer_ingest"]
                                   and results["ratios"]["nexus_vs_python_peer_ingest"] >= 10),
        "memory_le_200mb": bool(results.get("memory", {}).get("rss_with_connections_mb", 1e9) <= 200),
    }
    results["notes"] = [
        "rust-nostr LocalRelay keeps events in memory (no durability); nexus commits (WAL, fsync) before OK.",
        "nostr-relay 1.14 runs under uvicorn with its default config (1 worker).",
        "client and relays share this machine's CPUs; figures are single-run medians/percentiles.",
    ]
    results["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"ratios": results["ratios"], "targets": results["targets"]}, indent=1))
    print("wrote", RESULTS)


if __name__ == "__main__":
    asyncio.run(main())
