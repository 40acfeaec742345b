"""The fault suite's bookkeeping: what every scenario counts and the money rules it asserts.

Each scenario asks N jobs while one fault is injected (a relay, provider, backend or customer
killed; a skewed clock; many processes on one PYLON_HOME) and then checks, whatever happened:

* every ask ended with an answer or a clean error (a PylonError / one red CLI line, never a
  traceback or a hang);
* the customer's wallet lost exactly what the provider's wallet gained (dev wallet: no fees);
* every msat paid for an ask that got no answer came back as a refund (or was never taken):
  the provider's net gain equals what the answered asks cost.

`Tally.line()` is the figure the issue asks for: asked / answered / failed cleanly / paid
without answer (after refunds). Print it with `-s` to read the figures of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYLON = str(Path(sys.executable).parent / "pylon")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `pylon` child process: its own PYLON_HOME, nothing else of ours."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_")}
    env.update(PYLON_HOME=str(home), COLUMNS="200", **extra)
    return env


@dataclass
class Tally:
    """The outcome of one scenario's asks."""

    scenario: str
    asked: int = 0
    answered: int = 0
    failed_cleanly: int = 0
    unclean: list[str] = field(default_factory=list)  # tracebacks, hangs: each one a test failure
    paid_msat: int = 0       # what the customer's wallet lost, net of refunds
    received_msat: int = 0   # what the provider's wallet gained, net of refunds
    answered_cost_msat: int = 0  # what the answered asks were quoted
    refunded: int = 0

    @property
    def paid_without_answer_msat(self) -> int:
        return self.paid_msat - self.answered_cost_msat

    def line(self) -> str:
        return (f"[faults] {self.scenario}: asked {self.asked} / answered {self.answered} / failed cleanly "
                f"{self.failed_cleanly} / paid without answer {self.paid_without_answer_msat} msat "
                f"(refunds {self.refunded}; customer paid {self.paid_msat}, provider received {self.received_msat})")

    async def settle(self, customer_wallet, provider_wallet, *, fund: int, price: int) -> None:
        """Read the money figures: the customer was funded `fund`, each answer was quoted `price`."""
        self.paid_msat = fund - await customer_wallet.balance()
        self.received_msat = await provider_wallet.balance()
        self.answered_cost_msat = self.answered * price

    def check(self) -> None:
        """The three rules every scenario asserts."""
        print(self.line())
        assert not self.unclean, f"{len(self.unclean)} asks did not end cleanly: {self.unclean[:3]}"
        assert self.answered + self.failed_cleanly == self.asked, self.line()
        assert self.paid_msat == self.received_msat, self.line()
        assert self.paid_without_answer_msat == 0, self.line()


def clean_cli_failure(code: int, err: str) -> bool:
    """A failed `pylon` run is clean when it says what happened in a line and shows no traceback."""
    return code != 0 and "Traceback" not in err and bool(err.strip())


# --------------------------------------------------------------------------- real processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process we can SIGKILL and restart with the same arguments (and port)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.proc: asyncio.subprocess.Process | None = None
        self.first_line = ""

    async def start(self, timeout: float = 60.0) -> "Proc":
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=str(REPO), env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        self.first_line = line.decode().strip()
        assert self.first_line, f"{self.name} printed nothing (exit {self.proc.returncode})"
        return self

    async def kill(self) -> None:
        """SIGKILL, like a crash: no clean shutdown of anything."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    async def outage(self, down_s: float) -> None:
        """SIGKILL, stay down `down_s` seconds, start again with the same arguments."""
        await self.kill()
        await asyncio.sleep(down_s)
        await self.start()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                await self.kill()


def backend_proc(port: int, *, latency_ms: float = 0, token_delay_ms: float = 0) -> Proc:
    """The OpenAI-compatible double as its own process (tests/peers/openai_double.py)."""
    return Proc("backend", [sys.executable, "tests/peers/openai_double.py", "--port", str(port),
                            "--latency-ms", str(latency_ms), "--token-delay-ms", str(token_delay_ms)])


def relay_proc(port: int, db: Path, home: Path) -> Proc:
    """`pylon relay` as its own process on a fixed port (so a restart keeps its URL)."""
    return Proc("relay", [PYLON, "relay", "--port", str(port), "--db", str(db)], env=cli_env(home))


def is_clean(exc: BaseException) -> bool:
    """An ask that failed said so with one of Pylon's errors (never a bare exception)."""
    from pylon.errors import PylonError

    return isinstance(exc, PylonError)


async def ask_all(client, n: int, tally: Tally, *, timeout: float, **kwargs) -> list:
    """n asks at once through one PylonClient; counts answers and clean failures in `tally`."""
    async def one(i: int):
        try:
            out = await client.ask(f"fault question {i}", timeout=timeout, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - sorted below
            if is_clean(exc):
                tally.failed_cleanly += 1
                print(f"[faults] {tally.scenario}: ask {i} failed cleanly: {str(exc)[:200]}")
            else:
                tally.unclean.append(f"{type(exc).__name__}: {exc}")
            return None
        tally.answered += 1
        return out
    tally.asked += n
    return await asyncio.gather(*(one(i) for i in range(n)))


async def cli_ask(tally: Tally, i: int, argv: list[str], env: dict[str, str], *, timeout: float) -> None:
    """One `pylon ask` process (argv after `pylon`), sorted into `tally`: answered, failed with
    a clean red line, or unclean (a traceback, an empty failure, a hang)."""
    tally.asked += 1
    proc = await asyncio.create_subprocess_exec(PYLON, *argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        tally.unclean.append(f"ask {i} hung")
        return
    if proc.returncode == 0 and out.strip():
        tally.answered += 1
    elif clean_cli_failure(proc.returncode, err.decode()):
        tally.failed_cleanly += 1
        print(f"[faults] {tally.scenario}: ask {i} failed cleanly: {err.decode().strip()[-600:]!r}")
    else:
        tally.unclean.append(err.decode()[-500:])


async def pay_then_sigkill(module: str, relay: str, ledger_path: Path, provider: str) -> None:
    """Run a customer process (`python -m module RELAY LEDGER PROVIDER`) that prints "PAID ..."
    once its wallet paid and then hangs; SIGKILL it right there, like a crash."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, relay, str(ledger_path), provider, cwd=str(REPO), env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("PAID "), line
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
