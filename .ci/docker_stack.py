"""Bring up Pylon's docker stack, check it, run the end-to-end suite against it, take it down.

Called by .ci/docker once the images exist (pylon:local, local/nostr-relay:1.14). Compose v1
(Debian's docker-compose 1.29) rejects the top-level `name:` of docker/compose.yaml and
cannot pull vLLM, so this renders a CI copy of it (never edits it): the `nexus` relay and the
`wallet` profile (wallet-init + the NWC service) as they are, plus
  double       the OpenAI double (tests/peers/openai_double.py, stdlib only) in a pylon container
  provider     `pylon serve` (free) against the double, on the stack's relay
  foreign      PyPI nostr-relay 1.14 from local/nostr-relay:1.14
Every port is published on 127.0.0.1 only; containers talk on the stack's own network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "pylon-ci"
RELAY_PORT, FOREIGN_PORT, METRICS_PORT = 17777, 17778, 19100
KEEP = ("nexus", "wallet-init", "nwc")


def log(msg: str) -> None:
    print(f"[docker] {msg}", flush=True)


def render() -> dict:
    base = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    base.pop("name", None)
    services = {k: v for k, v in base["services"].items() if k in KEEP}
    for svc in services.values():
        svc.pop("profiles", None)
    services["nexus"]["ports"] = [f"127.0.0.1:{RELAY_PORT}:7777"]
    pylon = {k: v for k, v in services["nexus"].items()
             if k in ("image", "restart", "init", "read_only", "tmpfs", "security_opt")}
    health = {"interval": "3s", "timeout": "5s", "retries": 20, "start_period": "5s"}
    for name in KEEP:
        if "healthcheck" in services[name] and not services[name]["healthcheck"].get("disable"):
            services[name]["healthcheck"].update(health)
    services["double"] = {
        **pylon, "entrypoint": ["python", "/double/openai_double.py"],
        "command": ["--host", "0.0.0.0", "--port", "8000"],
        "volumes": [f"{ROOT / 'tests' / 'peers' / 'openai_double.py'}:/double/openai_double.py:ro"],
        "healthcheck": {"test": ["CMD", "python", "-c", "import urllib.request; "
                                 "urllib.request.urlopen('http://127.0.0.1:8000/v1/models', timeout=4)"], **health},
    }
    services["provider"] = {
        **pylon, "command": ["serve", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"],
        "environment": {"PYLON_RELAYS": "ws://relay:7777", "PYLON_BACKEND": "http://double:8000/v1",
                        "PYLON_FREE": "true", "PYLON_LOG_FORMAT": "json"},
        "volumes": ["provider-home:/data"],
        "ports": [f"127.0.0.1:{METRICS_PORT}:9100"],
        "depends_on": {"double": {"condition": "service_healthy"}, "nexus": {"condition": "service_healthy"}},
        "healthcheck": {"test": ["CMD", "python", "-c", "import urllib.request; "
                                 "urllib.request.urlopen('http://127.0.0.1:9100/health', timeout=4)"], **health},
    }
    services["foreign"] = {
        "image": "local/nostr-relay:1.14", "read_only": True, "tmpfs": ["/tmp"],
        "security_opt": ["no-new-privileges:true"], "volumes": ["foreign-data:/data"],
        "ports": [f"127.0.0.1:{FOREIGN_PORT}:7777"],
        "healthcheck": {"test": ["CMD", "python3", "-c", "import socket; "
                                 "socket.create_connection(('127.0.0.1', 7777), 2)"], **health},
    }
    volumes = {v: None for v in ("nexus-data", "wallet-ledger", "nwc-home", "provider-home", "foreign-data")}
    return {"version": "2.4", "services": services, "volumes": volumes}


def compose(path: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(path), *args], capture_output=True,
                          text=True, check=check, timeout=timeout)


def wait_healthy(path: Path, names: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {}
        for name in names:
            cid = compose(path, "ps", "-q", name).stdout.strip()
            out = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                                 capture_output=True, text=True).stdout.strip() if cid else "absent"
            states[name] = out
        if all(s == "healthy" for s in states.values()):
            return
        time.sleep(2)
    raise RuntimeError(f"not healthy in {timeout:.0f} s: {states}")


def checks(path: Path) -> None:
    """Image properties: non-root, read-only root file system, and `pylon doctor` inside."""
    for name in ("nexus", "provider", "nwc", "foreign"):
        cid = compose(path, "ps", "-q", name).stdout.strip()
        info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
        user = info["Config"]["User"]
        assert user and not user.startswith("0") and user != "root", f"{name} runs as root"
        assert info["HostConfig"]["ReadonlyRootfs"], f"{name} is not read-only"
        for binding in (info["HostConfig"].get("PortBindings") or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in binding), f"{name} publishes beyond 127.0.0.1"
    doctor = compose(path, "exec", "-T", "provider", "pylon", "doctor", "--relay", "ws://relay:7777",
                     "--backend", "http://double:8000/v1", "--timeout", "5", check=False)
    if doctor.returncode != 0:
        raise RuntimeError(f"pylon doctor failed inside the stack:\n{doctor.stdout}\n{doctor.stderr}")
    log("images non-root and read-only, ports on 127.0.0.1 only, `pylon doctor` passes inside the stack")


def nwc_uri(path: Path) -> str:
    """The NWC URI the wallet service printed, its relay rewritten to the published port."""
    logs = compose(path, "logs", "--no-color", "nwc").stdout
    for word in logs.replace('"', " ").split():
        if word.startswith("nostr+walletconnect://"):
            return word.replace("ws%3A%2F%2Frelay%3A7777", f"ws%3A%2F%2F127.0.0.1%3A{RELAY_PORT}").replace(
                "ws://relay:7777", f"ws://127.0.0.1:{RELAY_PORT}")
    raise RuntimeError("the NWC service printed no URI:\n" + logs[-2000:])


def suite(relay: str, extra_env: dict[str, str], paths: list[str], label: str) -> int:
    t = time.monotonic()
    env = {**os.environ, "PYLON_TEST_RELAY": relay, **extra_env}
    rc = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         *paths], cwd=ROOT, env=env, timeout=600).returncode
    log(f"suite against {label} ({relay}): {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - t:.0f} s")
    return rc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--started", type=float, default=time.time())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pylon-ci-compose-") as tmp:
        path = Path(tmp) / "compose.ci.yaml"
        path.write_text(yaml.safe_dump(render(), sort_keys=False))
        compose(path, "down", "-v", "--remove-orphans", check=False)
        rc = 1
        try:
            t = time.monotonic()
            compose(path, "up", "-d")
            wait_healthy(path, ["nexus", "nwc", "double", "provider", "foreign"])
            log(f"stack up and healthy in {time.monotonic() - t:.0f} s")
            checks(path)
            stack_env = {"PYLON_DOCKER_PROVIDER_METRICS": f"http://127.0.0.1:{METRICS_PORT}",
                         "PYLON_DOCKER_NWC_URI": nwc_uri(path)}
            # tests/e2e assumes a fresh relay per test; tests/docker is written for a shared one
            rc = suite(f"ws://127.0.0.1:{RELAY_PORT}", stack_env, ["tests/docker"], "the nexus relay in a container")
            rc |= suite(f"ws://127.0.0.1:{FOREIGN_PORT}", {}, ["tests/docker"],
                        "nostr-relay 1.14 (foreign) in a container")
        except (RuntimeError, AssertionError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or ""
            log(f"FAILED: {exc} {detail[-2000:]}")
            logs = compose(path, "logs", "--no-color", "--tail", "30", check=False).stdout
            print(logs[-6000:])
            rc = 1
        finally:
            t = time.monotonic()
            compose(path, "down", "-v", "--remove-orphans", check=False)
            log(f"stack taken down in {time.monotonic() - t:.0f} s")
    log(f"docker step {'passed' if rc == 0 else 'FAILED'} in {time.time() - args.started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
