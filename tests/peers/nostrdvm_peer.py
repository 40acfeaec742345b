"""Start and stop nostrdvm (PyPI nostr-dvm 1.1.8) as a foreign NIP-90 peer for tests. Stdlib only.

Built by tests/peers/setup_nostrdvm.sh into .peers/nostrdvm-venv. Two programs run in that venv:
  - tests/peers/nostrdvm_dvm.py     nostrdvm's own kind-5050 TextGenerationLLMLite DVM
    (litellm -> an OpenAI-compatible server); `NostrDVM.start(...)` runs it as a process group
  - tests/peers/nostrdvm_client.py  a nostrdvm-style customer: requests built with nostr-sdk's
    EventBuilder as nostrdvm's bot does, replies read with the bot's own parsing rules;
    `run_client(...)` runs one job and returns what that code read (a dict)

    dvm = NostrDVM.start(relay_url, base_url="http://127.0.0.1:P/v1", model="tiny")
    ... dvm.pubkey ...; dvm.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".peers" / "nostrdvm-venv"
STAMP = VENV / ".stamp-nostrdvm-1.1.8"
HERE = Path(__file__).resolve().parent


def is_built() -> bool:
    return STAMP.exists() and (VENV / "bin" / "python").exists()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"TIKTOKEN_CACHE_DIR": str(VENV / "tiktoken"), "PYTHONUNBUFFERED": "1",
                "PYTHONWARNINGS": "ignore", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    env.update(extra)
    return env


@dataclass
class NostrDVM:
    """A running nostrdvm DVM process: `.pubkey` (hex), `.log_path`, `.stop()`."""

    proc: subprocess.Popen
    pubkey: str
    secret: str
    workdir: Path
    log_path: Path

    @classmethod
    def start(cls, relay_url: str, *, base_url: str, model: str, fix_cost_sat: int = 0,
              lnbits_url: str = "", lnbits_invoice_key: str = "", lnbits_admin_key: str = "",
              ready_timeout: float = 60.0) -> "NostrDVM":
        if not is_built():
            raise RuntimeError("nostrdvm is not built: run tests/peers/setup_nostrdvm.sh")
        secret = secrets.token_hex(32)
        work = Path(tempfile.mkdtemp(prefix="nostrdvm-"))
        (work / "db").mkdir()
        log_path = work / "dvm.log"
        log = open(log_path, "wb")
        argv = [str(VENV / "bin" / "python"), str(HERE / "nostrdvm_dvm.py"), "--relay", relay_url,
                "--secret", secret, "--model", model, "--fix-cost", str(fix_cost_sat)]
        if lnbits_url:
            argv += ["--lnbits-url", lnbits_url, "--lnbits-invoice-key", lnbits_invoice_key,
                     "--lnbits-admin-key", lnbits_admin_key]
        proc = subprocess.Popen(argv, cwd=work, env=_env(OPENAI_API_BASE=base_url, OPENAI_API_KEY="sk-test"),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if "Sent heartbeat" in text or "READY " in text and "Nostr DVM public key" in text:
                for line in text.splitlines():
                    if line.startswith("READY "):
                        dvm = cls(proc, line.split()[1], secret, work, log_path)
                        time.sleep(1.0)  # its subscriptions are made after the heartbeat
                        return dvm
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        failed = cls(proc, "", secret, work, log_path)
        failed.stop(keep_files=True)
        text = log_path.read_text(errors="replace")[-3000:]
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"nostrdvm did not start; log:\n{text}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop the process group; its work folder (database, log) goes too unless kept."""
        self._stop_process()
        if not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_process(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)


def run_client(relay_url: str, *, prompt: str, provider: str = "", encrypt: bool = False, bid_msat: int = 0,
               pay_with_lnbits: str = "", timeout: float = 60.0) -> dict:
    """One job from a nostrdvm-style customer; returns its reading of the replies:
    {"request_id", "feedback": [{"status", "amount_msat", "bolt11", "content"}], "result": str|None,
    "paid": bool}. `pay_with_lnbits` ("URL|ADMINKEY") pays a payment-required bolt11 through LNbits
    as nostrdvm does (pay_bolt11_ln_bits)."""
    if not is_built():
        raise RuntimeError("nostrdvm is not built: run tests/peers/setup_nostrdvm.sh")
    argv = [str(VENV / "bin" / "python"), str(HERE / "nostrdvm_client.py"), "--relay", relay_url,
            "--prompt", prompt, "--timeout", str(timeout), "--bid", str(bid_msat)]
    if provider:
        argv += ["--provider", provider]
    if encrypt:
        argv.append("--encrypt")
    if pay_with_lnbits:
        argv += ["--lnbits", pay_with_lnbits]
    with tempfile.TemporaryDirectory(prefix="nostrdvm-client-") as work:
        done = subprocess.run(argv, cwd=work, env=_env(), capture_output=True, text=True, timeout=timeout + 30)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"nostrdvm client failed (rc {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
