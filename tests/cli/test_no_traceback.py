"""No input ends in a traceback (issue 9): bad arguments, files and environment give one clear
line (plus a hint line) and a non-zero exit code.

Two halves:
- the six inputs a new user met as raw tracebacks, each run as a real `pylon` process (a real
  relay, a real provider on the OpenAI double, a real SIGINT);
- a hypothesis property over every command of the app (walked from the click tree, so a new
  command is covered without editing this file): generated option values, unknown options,
  a PYLON_HOME that is a file or holds corrupt files, broken environment variables. These
  run in-process through typer's CliRunner, because a real process costs ~1 s of start-up
  per example on this machine; the six above cover the real-process path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylon.errors import EXIT_BUG
from pylon.nostr.keys import Keys

pytestmark = pytest.mark.timeout(180)
PYLON = str(Path(sys.executable).parent / "pylon")
MAX_STDERR_LINES = 4  # click's usage error is 3 (usage, try --help, error); ours is 1 or 2
CLOSED = "ws://127.0.0.1:1"  # nothing listens there: relays fail at once, never the internet


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLON_")}
    env.update(PYLON_HOME=str(home), COLUMNS="200", PYLON_RELAYS=CLOSED, **extra)
    return env


def _no_traceback(code: int, out: str, err: str) -> list[str]:
    """The shared property: no traceback, non-zero exit (not the bug code), a few lines on stderr."""
    assert "Traceback" not in out + err, err
    assert code not in (0, EXIT_BUG), (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= MAX_STDERR_LINES, err
    return lines


async def _pylon(*args: str, home: Path, stdin: bytes | None = None, timeout: float = 60,
                 **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PYLON, *args, env=_env(home, **env), stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode, out.decode(), err.decode()


# ------------------------------------------------------------------------ the six inputs
async def test_a_mistyped_npub_as_provider_is_one_line(tmp_path):
    npub = Keys.generate().npub
    typo = npub[:20] + ("q" if npub[20] != "q" else "p") + npub[21:]
    code, out, err = await _pylon("ask", "hi", "--provider", typo, home=tmp_path)
    lines = _no_traceback(code, out, err)
    assert code == 2 and "--provider" in lines[0] and "not a valid npub" in lines[0], err
    assert lines[1].startswith("hint:"), err


async def test_an_nsec_as_provider_is_refused_without_echoing_it(tmp_path):
    nsec = Keys.generate().nsec
    code, out, err = await _pylon("ask", "hi", "--provider", nsec, home=tmp_path)
    lines = _no_traceback(code, out, err)
    assert code == 2 and "secret key" in lines[0], err
    assert nsec not in out + err and nsec[5:25] not in out + err  # never echo a secret


async def test_a_corrupt_identity_file_is_one_line(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "identity.key").write_bytes(b"\x00\xffnot a key at all\n")
    for args in (("keys", "show"), ("ask", "hi", "--relay", CLOSED)):
        code, out, err = await _pylon(*args, home=tmp_path)
        lines = _no_traceback(code, out, err)
        assert code == 7 and "identity file" in lines[0] and "keys new --force" in err, (args, err)


async def test_relay_on_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await _pylon("relay", "--port", str(port), "--db", str(tmp_path / "r.sqlite"), home=tmp_path)
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]  # the relay logs at INFO
    _no_traceback(code, out, "\n".join(lines))
    assert code == 2 and "in use" in lines[0] and "--port 0" in lines[1], err


async def test_a_targeted_prompt_over_the_nip44_limit_is_one_line(relay_url, tmp_path):
    prompt = ("x" * 70_000).encode()
    code, out, err = await _pylon("ask", "-", "--relay", relay_url, "--provider", Keys.generate().npub,
                                  "--timeout", "10", home=tmp_path, stdin=prompt)
    lines = _no_traceback(code, out, err)
    assert code == 4 and "NIP-44" in lines[0] and "65,535" in lines[0] and "--no-encrypt" in err, err


async def test_ctrl_c_during_ask_stream_exits_130_with_one_line(relay_url, openai_double, tmp_path):
    from tests.e2e.helpers import serving

    openai_double.token_delay_s = 0.2  # a slow stream: Ctrl-C lands in the middle of it
    async with serving(relay_url, openai_double.base_url, tmp_path / "provider.sqlite") as provider:
        proc = await asyncio.create_subprocess_exec(
            PYLON, "ask", " ".join(["word"] * 60), "--max-tokens", "60", "--relay", relay_url, "--provider",
            provider.pubkey, "--stream", "--timeout", "60", env=_env(tmp_path / "customer"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            # a shell that started the suite in the background ignores SIGINT; the user's terminal does not
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        first = await asyncio.wait_for(proc.stdout.read(8), 60)  # the answer has started streaming
        assert first, "no streamed text before Ctrl-C"
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = _no_traceback(proc.returncode, (first + out).decode(), err.decode())
    assert proc.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], err


async def test_sigterm_during_ask_cancels_the_job_and_exits_143_with_one_line(relay_url, openai_double, tmp_path):
    """`timeout 5 pylon ask ...`, a supervisor, `kill`: the job in flight is cancelled as for
    Ctrl-C (its kind-5 published) instead of the process dying mid-job."""
    from tests.e2e.helpers import serving, wait_stored

    openai_double.latency_s = 30  # the answer never comes in time: SIGTERM lands mid-job
    async with serving(relay_url, openai_double.base_url, tmp_path / "provider.sqlite") as provider:
        proc = await asyncio.create_subprocess_exec(
            PYLON, "ask", "hi", "--relay", relay_url, "--provider", provider.pubkey, "--timeout", "60",
            env=_env(tmp_path / "customer"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await wait_for_request(openai_double)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        cancels = await wait_stored(relay_url, 1, kinds=[5], timeout=20)
    lines = _no_traceback(proc.returncode, out.decode(), err.decode())
    assert proc.returncode == 143 and lines == ["terminated (SIGTERM)"], err
    assert cancels and all(e.kind == 5 for e in cancels)


async def wait_for_request(double, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not double.requests and not double.in_flight:
            await asyncio.sleep(0.05)


async def test_servers_with_a_corrupt_database_end_in_one_line(relay_url, openai_double, tmp_path):
    """The servers are fuzzed at parse time only (below); their files are checked here, for real."""
    junk = b"this is not a database, whatever its name says" * 4
    (tmp_path / "relay.sqlite").write_bytes(junk)
    code, out, err = await _pylon("relay", "--port", "0", "--db", str(tmp_path / "relay.sqlite"), home=tmp_path)
    lines = _no_traceback(code, out, err)
    assert code == 7 and "relay.sqlite" in lines[0], err
    home = tmp_path / "provider"
    home.mkdir()
    (home / "provider.sqlite").write_bytes(junk)
    code, out, err = await _pylon("serve", "--relay", relay_url, "--backend", openai_double.base_url, "--free",
                                  home=home)
    lines = [line for line in err.splitlines() if " INFO " not in line and "created a new identity" not in line]
    _no_traceback(code, out, "\n".join(lines))
    assert code == 7 and "job store" in err, err


# ------------------------------------------------------------------------ every command, generated
def _commands() -> list[tuple[list[str], list]]:
    """(path, params) of every leaf command of the app, walked from click's tree."""
    import cli.main
    from typer.main import get_command

    found: list[tuple[list[str], list]] = []

    def walk(cmd, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            found.append((path, list(cmd.params)))

    walk(get_command(cli.main.app), [])
    return found


COMMANDS = _commands()
# these serve until Ctrl-C once their arguments parse: only parse-time bad input is generated for them
SERVERS = {("relay",), ("serve",), ("gateway",), ("demo",), ("wallet", "serve-nwc")}
NOISE_EXCLUDED = {"--verbose", "-v", "--help", "--secret", "--force"}
NASTY = [
    "", " ", "-1", "0", "abc", "1e999", "nan", "99999999999999999999", "3.5", "ws://", "ws://127.0.0.1:1",
    "http://127.0.0.1:1/v1", "npub1xyz", "nsec1qqqq", "ab" * 32, "dev://", "nwc://x", "lnbits://", "lnbc1",
    "[bold]x[/]", "[/]", "é✓🙂", "/nonexistent/dir/file", "/", "%s%n", "{}", "'\"", "\\", "a" * 300,
]
BAD_ENV = [
    {"PYLON_RELAYS": "not a url"}, {"PYLON_WALLET": "garbage://x"}, {"PYLON_MAX_MSAT": "-5"},
    {"PYLON_MAX_MSAT": "lots"}, {"PYLON_DAILY_BUDGET_MSAT": "1e999"}, {"PYLON_TIMEOUT_S": "never"},
    {"PYLON_BACKEND": "ftp://x"}, {},
]
CORRUPT = {  # file under PYLON_HOME -> content
    "identity.key": b"\x00\xff garbage",
    "config.toml": b"relays = [unclosed\n\xff\xfe",  # neither TOML nor UTF-8
    "ledger.sqlite": b"this is not a database" * 10,
    "provider.sqlite": b"SQLite format 3\x00" + b"\xff" * 200,
    "history.sqlite": b"\x00" * 512,
    "relay.sqlite": b"junk",
    "scores.sqlite": b"SQLite format 3\x00" + b"\x00" * 100,
}


def _options(params: list) -> list:
    return [p for p in params if p.param_type_name == "option" and not set(p.opts) & NOISE_EXCLUDED]


@st.composite
def invocations(draw):
    path, params = draw(st.sampled_from(COMMANDS))
    args: list[str] = list(path)
    for p in params:
        if p.param_type_name == "argument" and (p.required or draw(st.booleans())):
            args.append(draw(st.sampled_from(NASTY[1:])))  # "" as a positional is indistinguishable from none
    for p in draw(st.lists(st.sampled_from(_options(params) or [None]), max_size=3, unique_by=id)):
        if p is None:
            continue
        args.append(draw(st.sampled_from(p.opts)))
        if not getattr(p, "is_flag", False):
            args.append(draw(st.sampled_from(NASTY)))
    kind = "parse" if tuple(path) in SERVERS else draw(st.sampled_from(["parse", "home-is-file", "files", "env"]))
    if kind == "parse":  # always refused by the parser, whatever else was drawn
        args.insert(draw(st.integers(len(path), len(args))), "--no-such-option")
    env = dict(draw(st.sampled_from(BAD_ENV))) if kind == "env" else {}
    files = draw(st.lists(st.sampled_from(sorted(CORRUPT)), min_size=1, max_size=3, unique=True)) \
        if kind == "files" else []
    return kind, args, env, files


def _run_in_process(args: list[str], home: Path, env: dict[str, str]):
    from typer.testing import CliRunner

    import cli.main

    full_env = {"PYLON_HOME": str(home), "PYLON_RELAYS": CLOSED, "COLUMNS": "200", **env}
    try:
        return CliRunner().invoke(cli.main.app, args, env=full_env, catch_exceptions=True)
    finally:  # a command may have configured logging onto the runner's (now closed) stderr
        logging.getLogger().handlers.clear()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=invocations())
def test_no_command_ends_in_a_traceback(case, tmp_path_factory):
    kind, args, env, files = case
    base = tmp_path_factory.mktemp("home")
    home = base / "pylon"
    if kind == "home-is-file":
        home.write_text("a file, not a folder")
    else:
        home.mkdir()
        for name in files:
            (home / name).write_bytes(CORRUPT[name])
    result = _run_in_process(args, home, env)
    err, out = result.stderr, result.stdout
    shown = f"pylon {' '.join(args)} [{kind} {env} {files}] -> {result.exit_code}\n{err}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{shown}\n{result.exception!r}"
    assert "Traceback" not in out + err, shown
    assert result.exit_code != EXIT_BUG, shown
    if kind == "parse":
        assert result.exit_code == 2, shown
    if result.exit_code != 0:  # said why: on stderr in a few lines (`doctor` reports its checks on stdout)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) <= MAX_STDERR_LINES and (lines or out.strip()), shown


def test_every_command_is_generated():
    """The property above draws from the whole app: a new command is fuzzed without edits here."""
    paths = {tuple(p) for p, _ in COMMANDS}
    assert {("ask",), ("keys", "show"), ("wallet", "pay"), ("relay",), ("receipts",)} <= paths
    assert SERVERS <= paths | {("gateway",)}


async def test_a_corrupt_scores_file_is_refused_by_providers_and_only_warned_about_by_ask(
        relay_url, openai_double, tmp_path):
    """The provider scores are advice for choosing a provider: `pylon providers`, which only
    shows them, ends in one line (exit 7); `pylon ask` warns once and asks on."""
    from tests.e2e.helpers import serving

    home = tmp_path / "customer"
    home.mkdir()
    (home / "scores.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    code, out, err = await _pylon("providers", "--relay", relay_url, home=home)
    lines = _no_traceback(code, out, err)
    assert code == 7 and "provider scores" in lines[0] and "scores.sqlite" in lines[0], err
    async with serving(relay_url, openai_double.base_url, tmp_path / "provider.sqlite") as provider:
        code, out, err = await _pylon("ask", "hi", "--relay", relay_url, "--provider", provider.pubkey,
                                      "--timeout", "30", home=home)
    assert code == 0 and out.strip(), (code, out, err)
    assert "Traceback" not in err and err.count("provider scores") == 1, err


async def test_a_wallet_file_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / "wallet.uri").write_bytes(b"\x00\xff\xfe\x80 binary")
    code, out, err = await _pylon("wallet", "balance", "--wallet-file", str(tmp_path / "wallet.uri"), home=tmp_path)
    lines = _no_traceback(code, out, err)
    assert code == 2 and "not text" in lines[0], err


async def test_binary_stdin_to_ask_is_one_line_about_the_input(tmp_path):
    code, out, err = await _pylon("ask", "--relay", CLOSED, home=tmp_path, stdin=bytes(range(256)) * 4)
    lines = _no_traceback(code, out, err)
    assert code == 2 and "stdin is not UTF-8 text" in lines[0] and "surrogate" not in err, err


async def test_a_prompt_over_the_relays_size_is_one_line_with_a_hint(relay_url, tmp_path):
    """The relay refuses the request for its size: the error names it and the hint says to
    shorten the prompt (sending it again cannot help; the gateway answers 413 for the same)."""
    code, out, err = await _pylon("ask", "-", "--relay", relay_url, "--timeout", "5", home=tmp_path,
                                  stdin=b"x" * 100_000)
    lines = _no_traceback(code, out, err)
    assert code == 3 and "too large" in lines[0] and lines[1].startswith("hint:") and "shorten" in lines[1], err
