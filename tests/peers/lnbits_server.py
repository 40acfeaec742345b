"""Start and stop a real LNbits 1.6.2 (FakeWallet funding source) for tests. Stdlib only.

Built by tests/peers/setup_lnbits.sh into .peers/lnbits-venv. Per docs/TEST_PEERS.md:
the working directory must be the venv's site-packages (else 'lnbits/static' is missing),
LNbits runs its server as a child so it is started in its own process group and the group is
stopped, and it is initialised with first_install (admin user), then accounts are created and
funded through the admin API. FakeWallet can only pay invoices of the same LNbits (internal).

    with LNbitsServer.start() as srv:          # or srv = LNbitsServer.start(); srv.stop()
        alice = srv.create_account("alice"); srv.fund(alice["id"], 100_000)   # sats
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".peers" / "lnbits-venv"
STAMP = VENV / ".stamp-lnbits-1.6.2"


def is_built() -> bool:
    return STAMP.exists() and (VENV / "bin" / "lnbits").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site_packages() -> Path:
    found = sorted((VENV / "lib").glob("python3*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages in {VENV}; run tests/peers/setup_lnbits.sh")
    return found[0]


@dataclass
class LNbitsServer:
    base_url: str
    proc: subprocess.Popen
    data_dir: Path
    log_path: Path
    admin_token: str = ""
    accounts: dict[str, dict] = field(default_factory=dict)

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def start(cls, *, ready_timeout: float = 90.0) -> "LNbitsServer":
        if not is_built():
            raise RuntimeError("LNbits is not built: run tests/peers/setup_lnbits.sh")
        data = Path(tempfile.mkdtemp(prefix="lnbits-data-"))
        port = _free_port()
        env = dict(os.environ)
        env.update({
            "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
            "LNBITS_DATA_FOLDER": str(data),
            "FAKE_WALLET_SECRET": secrets.token_hex(16),
            "LNBITS_ADMIN_UI": "true",
            "LNBITS_EXTENSIONS_MANIFESTS": "[]",
            "LNBITS_RESERVE_FEE_MIN": "0",
        })
        log_path = data / "lnbits.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen([str(VENV / "bin" / "lnbits"), "--host", "127.0.0.1", "--port", str(port)],
                                cwd=_site_packages(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        srv = cls(base_url=f"http://127.0.0.1:{port}", proc=proc, data_dir=data, log_path=log_path)
        try:
            srv._wait_ready(ready_timeout)
            srv._first_install()
        except BaseException:
            srv.stop()
            raise
        return srv

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LNbits exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                status, _ = self.request("GET", "/api/v1/health", timeout=2)
                if status < 500:  # before first_install /api/v1/health redirects to the install page
                    return
            except OSError:
                pass
            # polling a server that is starting: the wait is bounded by the readiness probe itself
            time.sleep(0.25)
        raise RuntimeError(f"LNbits not ready after {timeout} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        # the server is a child of the `lnbits` launcher: wait until the whole group is gone
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "LNbitsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- HTTP ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict | None = None, *, api_key: str | None = None,
                token: str | None = None, timeout: float = 15) -> tuple[int, object]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["X-Api-Key"] = api_key
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                try:
                    return resp.status, (json.loads(raw) if raw else None)
                except ValueError:  # HTML pages (e.g. the first-install redirect target)
                    return resp.status, raw.decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def _first_install(self) -> None:
        pw = secrets.token_hex(12)
        status, body = self.request("PUT", "/api/v1/auth/first_install",
                                    {"username": "admin", "password": pw, "password_repeat": pw})
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise RuntimeError(f"LNbits first_install failed: {status} {body}")
        self.admin_token = body["access_token"]

    def create_account(self, name: str) -> dict:
        """A new user+wallet: dict with id, adminkey, inkey (and LNbits' other fields)."""
        status, body = self.request("POST", "/api/v1/account", {"name": name})
        if status not in (200, 201) or not isinstance(body, dict):
            raise RuntimeError(f"LNbits account creation failed: {status} {body}")
        self.accounts[name] = body
        return body

    def fund(self, wallet_id: str, amount_sat: int) -> None:
        """Credit a wallet through the admin API (FakeWallet: money from nothing)."""
        status, body = self.request("PUT", "/users/api/v1/balance", {"id": wallet_id, "amount": amount_sat},
                                    token=self.admin_token)
        if status != 200:
            raise RuntimeError(f"LNbits funding failed: {status} {body}")


if __name__ == "__main__":  # manual check: start, create+fund, print, stop
    with LNbitsServer.start() as s:
        a = s.create_account("alice")
        s.fund(a["id"], 1000)
        print(s.base_url, s.request("GET", "/api/v1/wallet", api_key=a["inkey"]))
