"""pylon.ops.metrics and pylon.ops.health: registries, the relay stats collector, the HTTP server.

Everything is scraped over real HTTP from a real server on a free 127.0.0.1 port and parsed
with prometheus_client's own parser, so the text format is checked, not just our strings.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylon.ops.health import (
    CheckResult,
    Health,
    MetricsServer,
    backend_check,
    listening_check,
    provider_monitor,
    relays_check,
    wallet_check,
)
from pylon.ops.metrics import ProviderMetrics, RelayMetrics, RelayStatsCollector


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the Prometheus text format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


def test_provider_metrics_count_jobs_tokens_msats_latency():
    m = ProviderMetrics()
    with m.job_in_flight():
        assert samples(m.render().decode())[("pylon_provider_jobs_in_flight", ())] == 1
        with m.time_backend("tiny"):
            pass
        m.job_finished("success", tokens=(11, 7))
    m.earned(21_000)
    m.earned(-5)  # ignored: money is never negative here
    m.job_status("payment-required")
    m.job_status("<script>")  # unknown -> "other", never a new label
    s = samples(m.render().decode())
    assert s[("pylon_provider_jobs_in_flight", ())] == 0
    assert s[("pylon_provider_jobs_total", (("status", "success"),))] == 1
    assert s[("pylon_provider_jobs_total", (("status", "payment-required"),))] == 1
    assert s[("pylon_provider_jobs_total", (("status", "other"),))] == 1
    assert ("pylon_provider_jobs_total", (("status", "<script>"),)) not in s
    assert s[("pylon_provider_tokens_total", (("type", "prompt"),))] == 11
    assert s[("pylon_provider_tokens_total", (("type", "completion"),))] == 7
    assert s[("pylon_provider_settled_msat_total", ())] == 21_000
    assert s[("pylon_provider_backend_latency_seconds_count", (("model", "tiny"),))] == 1
    assert ("process_resident_memory_bytes", ()) in s


def test_backend_error_counted_and_propagated():
    m = ProviderMetrics(process=False)
    with pytest.raises(RuntimeError):
        with m.time_backend("tiny"):
            raise RuntimeError("backend died")
    s = samples(m.render().decode())
    assert s[("pylon_provider_backend_errors_total", (("model", "tiny"),))] == 1
    assert s[("pylon_provider_backend_latency_seconds_count", (("model", "tiny"),))] == 1


def test_two_registries_in_one_process_are_independent():
    a, b = ProviderMetrics(), ProviderMetrics()  # the global registry would refuse the second
    a.job_finished("success")
    sa, sb = samples(a.render().decode()), samples(b.render().decode())
    assert sa[("pylon_provider_jobs_total", (("status", "success"),))] == 1
    assert sb[("pylon_provider_jobs_total", (("status", "success"),))] == 0


def test_relay_connection_state_read_at_scrape_time():
    state = {"ws://a": "connected", "ws://b": "connecting"}
    m = ProviderMetrics(process=False)
    m.track_relays(lambda: state)
    s = samples(m.render().decode())
    assert s[("pylon_provider_relay_connected", (("relay", "ws://a"),))] == 1
    assert s[("pylon_provider_relay_connected", (("relay", "ws://b"),))] == 0
    state["ws://b"] = "connected"
    assert samples(m.render().decode())[("pylon_provider_relay_connected", (("relay", "ws://b"),))] == 1


def test_relay_stats_collector_reads_nexus_stats_object():
    from nexus_relay import RelayStats

    stats = RelayStats()
    stats.connections = 3
    stats.subscriptions = 7
    stats.events_stored = 5
    stats.messages["EVENT"] += 6
    stats.messages["REQ"] += 2
    stats.reject("invalid: bad signature")
    stats.reject("rate-limited: slow down")
    s = samples(RelayMetrics(stats, process=False).render().decode())
    assert s[("nexus_relay_connections", ())] == 3
    assert s[("nexus_relay_subscriptions", ())] == 7
    assert s[("nexus_relay_events_stored_total", ())] == 5
    assert s[("nexus_relay_messages_total", (("type", "EVENT"),))] == 6
    assert s[("nexus_relay_messages_total", (("type", "REQ"),))] == 2
    assert s[("nexus_relay_rejections_total", (("reason", "invalid"),))] == 1
    assert s[("nexus_relay_rejections_total", (("reason", "rate-limited"),))] == 1


def test_relay_stats_collector_survives_a_broken_stats_object():
    class Broken:
        def snapshot(self):
            raise RuntimeError("shutting down")

    assert list(RelayStatsCollector(Broken()).collect()) == []
    assert list(RelayStatsCollector({"connections": "not a number"}).collect()) == []
    families = {f.name for f in RelayStatsCollector({"connections": 1, "messages": {"EVENT": 2}}).collect()}
    assert families == {"nexus_relay_connections", "nexus_relay_messages"}


async def test_server_serves_metrics_and_health_200_then_503():
    m = ProviderMetrics()
    m.job_finished("success")
    healthy = {"value": True}

    async def flaky() -> CheckResult:
        return CheckResult(healthy["value"], "fine" if healthy["value"] else "broken")

    async with MetricsServer(m.registry, Health({"thing": flaky}), port=0) as srv:
        assert srv.port != 0
        r = await scrape(srv.url + "/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert samples(r.text)[("pylon_provider_jobs_total", (("status", "success"),))] == 1
        r = await scrape(srv.url + "/health")
        assert r.status_code == 200
        assert r.json() == {"ok": True, "checks": {"thing": {"ok": True, "detail": "fine"}}}
        healthy["value"] = False
        r = await scrape(srv.url + "/health")
        assert r.status_code == 503
        assert r.json()["checks"]["thing"] == {"ok": False, "detail": "broken"}
        assert (await scrape(srv.url + "/nope")).status_code == 404
        async with httpx.AsyncClient() as client:
            assert (await client.post(srv.url + "/metrics")).status_code == 405


async def test_server_survives_garbage_and_a_slow_check():
    async def hangs() -> CheckResult:
        await asyncio.Event().wait()
        raise AssertionError

    async def raises() -> CheckResult:
        raise ValueError("boom")

    async with MetricsServer(None, Health({"hangs": hangs, "raises": raises}, timeout=0.2)) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"\x00\x01 not http at all\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply.startswith(b"HTTP/1.1 400")
        writer.close()
        r = await scrape(srv.url + "/health")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["hangs"] == {"ok": False, "detail": "no answer within 0.2 s"}
        assert checks["raises"] == {"ok": False, "detail": "ValueError: boom"}
        assert (await scrape(srv.url + "/metrics")).status_code == 404  # no registry given


async def test_backend_relays_wallet_checks_against_real_parts(openai_double, dev_ledger, unused_tcp_port):
    from pylon.provider.backends import OpenAIBackend

    dev_ledger.fund("provider", 5_000)
    wallet = dev_ledger.wallet("provider")
    async with OpenAIBackend(openai_double.base_url) as good, \
            OpenAIBackend(f"http://127.0.0.1:{unused_tcp_port}/v1", timeout=2) as dead:
        ok = await backend_check(good)()
        assert ok.ok and "model" in ok.detail
        bad = await backend_check(dead)()
        assert not bad.ok and "unavailable" in bad.detail
    assert (await wallet_check(wallet)()).ok
    r = await relays_check(lambda: {"ws://a": "connected", "ws://b": "disconnected"})()
    assert r.ok and r.detail == "1/2 connected; not connected: ws://b"
    assert not (await relays_check(lambda: {"ws://b": "connecting"})()).ok
    with pytest.raises(OSError):
        await listening_check("127.0.0.1", unused_tcp_port)()


async def test_provider_monitor_health_reflects_a_dead_backend(openai_double, unused_tcp_port):
    from pylon.provider.backends import OpenAIBackend

    m = ProviderMetrics()
    status = {"ws://relay": "connected"}
    async with OpenAIBackend(openai_double.base_url) as good:
        async with provider_monitor(m, backend=good, relay_status=lambda: status) as srv:
            r = await scrape(srv.url + "/health")
            assert r.status_code == 200, r.text
            assert set(r.json()["checks"]) == {"backend", "relays"}
            assert samples((await scrape(srv.url + "/metrics")).text)[
                ("pylon_provider_relay_connected", (("relay", "ws://relay"),))] == 1
    async with OpenAIBackend(f"http://127.0.0.1:{unused_tcp_port}/v1", timeout=2) as dead:
        async with provider_monitor(ProviderMetrics(), backend=dead) as srv:
            r = await scrape(srv.url + "/health")
            assert r.status_code == 503
            assert r.json()["checks"]["backend"]["ok"] is False
