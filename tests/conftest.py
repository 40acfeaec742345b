"""Shared fixtures. Every test gets its own PYLON_HOME in a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def pylon_home(tmp_path, monkeypatch):
    """Point PYLON_HOME at a fresh temporary folder so no test touches the user's state."""
    home = tmp_path / "pylon-home"
    home.mkdir()
    monkeypatch.setenv("PYLON_HOME", str(home))
    for name in ("PYLON_WALLET", "PYLON_RELAYS", "PYLON_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return home


# --- LLM backend test peers (owner: backend helper) ------------------------------------------
# The repo root goes on sys.path so `tests.peers.*` (stdlib-only helpers) import the same way
# from tests, benches and scripts.
import sys as _sys  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

_REPO_ROOT = _Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in _sys.path:
    _sys.path.insert(0, str(_REPO_ROOT))


@pytest.fixture
def openai_double():
    """An OpenAI-compatible server DOUBLE on a free 127.0.0.1 port, in its own thread (so sync
    code such as DSPy can call it as well as async tests). Configure it on the object:
    .latency_s, .token_delay_s, .reply (request dict -> text), .stream_usage, .fail_next(),
    .hang_next(), .drop_next(); read .requests, .max_in_flight; .base_url is ".../v1"."""
    from tests.peers.openai_double import OpenAIDouble

    double = OpenAIDouble().start_in_thread()
    try:
        yield double
    finally:
        double.stop_thread()


# --- wallets (owner: wallet helper) ------------------------------------------------------------
class DevLedgerHandle:
    """A fresh dev-wallet ledger file: `.path`, `.uri(account)`, `.fund(account, msat)`,
    `.wallet(account)` (an open DevWallet; closed by the fixture)."""

    def __init__(self, path):
        self.path = path
        self._wallets = []

    def uri(self, account: str) -> str:
        return f"dev://{self.path}?account={account}"

    def fund(self, account: str, amount_msat: int) -> int:
        from wallet.dev import fund

        return fund(self.path, account, amount_msat)

    def wallet(self, account: str):
        from wallet.dev import DevWallet

        w = DevWallet(self.path, account)
        self._wallets.append(w)
        return w


@pytest.fixture
def dev_ledger(tmp_path):
    """A dev-wallet ledger in tmp_path (see DevLedgerHandle)."""
    handle = DevLedgerHandle(tmp_path / "devledger.sqlite")
    yield handle
    for w in handle._wallets:
        if not w._closed:
            w._closed = True
            w.ledger.close()


@pytest.fixture(scope="session")
def vllm_server():
    """The real vLLM server on the CPU serving the tiny random Llama, started once per session.

    Yields a pylon.devstack.vllm.VllmServer: .base_url (".../v1"), .model ("tiny-llama").
    Skips only when the set-up (tests/peers/setup_vllm.sh, run by .ci/setup.sh) has not built
    the vLLM venv or the model; a server that fails to start is an error, not a skip."""
    from pylon.devstack.vllm import missing_reason, start_vllm

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = start_vllm()
    try:
        yield server
    finally:
        server.stop()


# --- relay (owner: relay helper) ---------------------------------------------------------------
@pytest.fixture
async def relay_url(tmp_path):
    """ws:// URL of a relay for this test: PYLON_TEST_RELAY when set, else an embedded nexus
    relay on a free 127.0.0.1 port with its own database in tmp_path (stopped after the test)."""
    import os

    external = os.environ.get("PYLON_TEST_RELAY")
    if external:
        yield external
        return
    from nexus_relay import running_relay

    async with running_relay(tmp_path / "nexus-relay.sqlite") as relay:
        yield relay.url


@pytest.fixture(autouse=True)
def _skip_embedded_relay_only(request):
    """Tests marked `embedded_relay` need the in-process nexus relay (its config or internals):
    skip them when PYLON_TEST_RELAY points the suite at another relay."""
    import os

    if os.environ.get("PYLON_TEST_RELAY") and request.node.get_closest_marker("embedded_relay"):
        pytest.skip("needs the embedded nexus relay; PYLON_TEST_RELAY is set")


class LNbitsPeer:
    """The running LNbits: `.base_url`, `.alice`/`.bob` (dicts with id, adminkey, inkey; alice is
    funded with 1,000,000 sat), `.uri(account, key="adminkey")`, `.server` (LNbitsServer)."""

    def __init__(self, server, alice, bob):
        self.server, self.base_url, self.alice, self.bob = server, server.base_url, alice, bob

    def uri(self, account: dict, key: str = "adminkey") -> str:
        return f"lnbits://{account[key]}@{self.base_url.removeprefix('http://')}?tls=0"


@pytest.fixture(scope="session")
def lnbits():
    """A real LNbits 1.6.2 (FakeWallet) for the whole session; skipped when
    tests/peers/setup_lnbits.sh has not built .peers/lnbits-venv."""
    from tests.peers.lnbits_server import LNbitsServer, is_built

    if not is_built():
        pytest.skip("LNbits test peer not built: run tests/peers/setup_lnbits.sh")
    server = LNbitsServer.start()
    try:
        alice, bob = server.create_account("alice"), server.create_account("bob")
        server.fund(alice["id"], 1_000_000)
        yield LNbitsPeer(server, alice, bob)
    finally:
        server.stop()
