"""End-to-end checks against Pylon's docker stack, run from the host by .ci/docker.

Only ports the stack publishes on 127.0.0.1 are addressed: the nexus relay in a container
(PYLON_TEST_RELAY), `pylon serve` in a container (its metrics port) in front of the OpenAI
double in a container, and the NWC wallet service in a container (its URI, relay rewritten to
the published port). Skipped unless .ci/docker set the PYLON_DOCKER_* variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import pytest

from tests.faults.harness import PYLON, cli_env

METRICS = os.environ.get("PYLON_DOCKER_PROVIDER_METRICS", "")
NWC_URI = os.environ.get("PYLON_DOCKER_NWC_URI", "")
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not (METRICS and os.environ.get("PYLON_TEST_RELAY")),
                                 reason="needs the docker stack (.ci/docker)")]


def test_provider_in_a_container_is_healthy():
    with urllib.request.urlopen(f"{METRICS}/health", timeout=5) as resp:
        assert resp.status == 200


async def test_ask_the_provider_in_a_container(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        PYLON, "ask", "hello from the host", "--relay", os.environ["PYLON_TEST_RELAY"], "--json", "--timeout", "60",
        env=cli_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["text"] == "This is the OpenAI double answering the prompt: hello from the host"


@pytest.mark.skipif(not NWC_URI, reason="no NWC URI from the stack")
async def test_nwc_service_in_a_container_answers():
    from wallet import connect_wallet

    w = await connect_wallet(NWC_URI)
    try:
        assert await w.balance() > 0  # wallet-init funded the customer account
    finally:
        await w.aclose()
