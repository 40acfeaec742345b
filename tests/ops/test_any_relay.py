"""The "any relay" switch: PYLON_TEST_RELAY redirects `relay_url` and skips `embedded_relay` tests.

The probes below run normally as part of the suite; the switch tests run them again in a
child pytest with PYLON_TEST_RELAY set and read the outcome from its JUnit XML report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).relative_to(ROOT).as_posix()


@pytest.mark.embedded_relay
def test_probe_embedded_only():
    assert not os.environ.get("PYLON_TEST_RELAY")


async def test_probe_relay_url(relay_url):
    expected = os.environ.get("PYLON_TEST_RELAY")
    if expected:
        assert relay_url == expected
    else:
        assert relay_url.startswith("ws://127.0.0.1:")


def run_probes(tmp_path: Path, relay: str | None) -> dict[str, str]:
    report = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k != "PYLON_TEST_RELAY"}
    if relay:
        env["PYLON_TEST_RELAY"] = relay
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    f"{HERE}::test_probe_embedded_only", f"{HERE}::test_probe_relay_url"],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcomes[case.get("name")] = ("skipped" if "skipped" in kinds else
                                      "failed" if kinds & {"failure", "error"} else "passed")
    return outcomes


def test_switch_set_skips_embedded_tests_and_redirects_relay_url(tmp_path):
    # Nothing needs to listen there: the probe only compares the URL it is handed.
    outcomes = run_probes(tmp_path, "ws://127.0.0.1:7777")
    assert outcomes == {"test_probe_embedded_only": "skipped", "test_probe_relay_url": "passed"}


def test_switch_unset_runs_everything_on_the_embedded_relay(tmp_path):
    outcomes = run_probes(tmp_path, None)
    assert outcomes == {"test_probe_embedded_only": "passed", "test_probe_relay_url": "passed"}
