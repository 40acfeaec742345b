"""What a newcomer trial found in the CLI, each as a real `pylon` process: exit codes and hint
lines for a bad wallet URI, a malformed job id and a missing identity; `pylon config unset`;
`pylon demo` against a dead backend (exit 6 before anything starts) and its stdout/stderr split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pylon.nostr.keys import Keys
from tests.cli.stack import cli_env, pylon

pytestmark = pytest.mark.timeout(180)
CLOSED = "ws://127.0.0.1:1"  # nothing listens there: relays fail at once


def _error_and_hint(err: str) -> tuple[str, str]:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], err
    return lines[0], lines[1]


async def test_bad_wallet_scheme_is_a_usage_error_with_the_schemes(tmp_path):
    code, _, err = await pylon("ask", "--wallet", "foo://bar", "x", home=tmp_path, env=cli_env(tmp_path, PYLON_RELAYS=CLOSED))
    error, hint = _error_and_hint(err)
    assert code == 2 and "foo://bar" in error
    assert "dev://" in hint and "lnbits://" in hint and "nostr+walletconnect://" in hint


@pytest.mark.parametrize("argv", [
    ["serve", "--wallet", "foo://bar", "--free"],               # before: a 5 s relay wait, then exit 3
    ["serve", "--wallet", "lnbits://nokey", "--price-msat", "5"],  # before: exit 5 (a payment error)
    ["wallet", "balance", "--wallet", "foo://bar"],
    ["wallet", "balance", "--wallet", "dev://"],
    ["gateway", "--wallet", "foo://bar"],
    ["ask", "--wallet", "nostr+walletconnect://abc", "x"],
], ids=lambda a: " ".join(a[:2]) + " " + a[a.index("--wallet") + 1])
async def test_every_command_refuses_a_malformed_wallet_uri_as_a_usage_error(tmp_path, argv):
    code, _, err = await pylon(*argv, home=tmp_path, env=cli_env(tmp_path, PYLON_RELAYS=CLOSED))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "relay" not in errors[0] and ("URI" in errors[0] or "scheme" in errors[0]), errors[0]


async def test_malformed_job_id_is_a_usage_error_and_note_nevent_are_accepted(tmp_path):
    code, _, err = await pylon("result", "deadbeef", home=tmp_path, env=cli_env(tmp_path, PYLON_RELAYS=CLOSED))
    error, hint = _error_and_hint(err)
    assert code == 2 and "deadbeef" in error and "64" in hint and "nevent" in hint
    from pylon.nostr import bech32

    job = "ab" * 32
    for form in (bech32.encode("note", bytes.fromhex(job)),
                 bech32.encode("nevent", bytes([0, 32]) + bytes.fromhex(job) + bytes([1, 3]) + b"wss")):
        code, _, err = await pylon("result", form, "--timeout", "0.2", home=tmp_path, env=cli_env(tmp_path, PYLON_RELAYS=CLOSED))
        assert code == 3 and "not a job id" not in err, err  # parsed; then the (closed) relay is the problem


async def test_keys_show_without_identity_hints_on_its_own_line(tmp_path):
    code, _, err = await pylon("keys", "show", home=tmp_path)
    error, hint = _error_and_hint(err)
    assert code != 0 and "no identity" in error and "pylon keys new" in hint and "pylon keys new" not in error


async def test_config_unset_clears_the_avoid_list(tmp_path):
    npub = Keys.generate().npub
    assert (await pylon("config", "set", "avoid", npub, home=tmp_path))[0] == 0
    assert (await pylon("config", "set", "timeout_s", "30", home=tmp_path))[0] == 0
    code, out, err = await pylon("config", "unset", "avoid", home=tmp_path)
    assert code == 0 and "avoid" in out, err
    code, out, _ = await pylon("config", "show", "--json", home=tmp_path)
    shown = json.loads(out)
    assert code == 0 and shown["settings"]["avoid"] == [] and shown["settings"]["timeout_s"] == 30
    assert shown["sources"]["timeout_s"] == "file"  # the other settings stay
    code, out, _ = await pylon("config", "unset", "avoid", home=tmp_path)
    assert code == 0 and "was not set" in out
    code, _, err = await pylon("config", "unset", "nonsense", home=tmp_path)
    assert code == 2 and "unknown setting" in err


async def test_demo_with_a_dead_backend_exits_6_before_serving(tmp_path):
    code, out, err = await pylon("demo", "--backend", "http://127.0.0.1:1/v1", home=tmp_path)
    error, hint = _error_and_hint(err)
    assert code == 6 and "127.0.0.1:1" in error and "--backend" in hint
    assert "serving" not in err and out == ""


async def test_demo_free_says_free_and_keeps_status_off_stdout(tmp_path, openai_double):
    openai_double.latency_s = 0.4  # long enough for the provider's `processing` (sent 100 ms into a job)
    code, out, err = await pylon("demo", "--backend", openai_double.base_url, "--free", "Hi", home=tmp_path)
    assert code == 0, err
    assert "free: answered by provider npub1" in out and "paid:" not in out
    assert "answer:" in out and "balances:" in out
    assert "stopped" in err and "stopped" not in out
    assert "processing (free" in err and "pay for its key" not in err  # nothing is paid in free mode


async def test_receipts_and_jobs_tables_name_npubs_and_take_them(pylon_home):
    from pylon.customer.ledger import Ledger
    from pylon.home import db_path
    from pylon.provider.jobstore import JobStore

    who = Keys.generate()
    with Ledger() as led:  # PYLON_HOME/ledger.sqlite, as the client writes it
        led.record_intent(job_id="ab" * 32, provider=who.public_key, payment_hash="aa" * 32, amount_msat=1_000,
                          bolt11="x")
        led.mark_paid("aa" * 32, preimage="bb" * 32, fee_msat=2)
    code, out, err = await pylon("receipts", home=pylon_home)
    assert code == 0, err
    assert out.count(who.npub[:16]) == 2 and who.public_key[:12] not in out  # the receipt and its total
    code, out, _ = await pylon("receipts", "--json", home=pylon_home)
    assert json.loads(out)["receipts"][0]["provider"] == who.public_key  # JSON unchanged: hex

    store = JobStore(db_path("provider"))
    store.record_seen("cd" * 32, who.public_key, 1_700_000_000, "{}", model="m")
    store.close()
    code, out, err = await pylon("jobs", home=pylon_home)
    assert code == 0 and who.npub[:16] in out and who.public_key[:12] not in out, err
    code, out, err = await pylon("jobs", "--json", "--customer", who.npub, home=pylon_home)
    assert code == 0 and [j["customer"] for j in json.loads(out)] == [who.public_key], err


@pytest.mark.parametrize("argv, says", [
    (["relay", "--port", "99999"], "65535"),  # was a crash (OverflowError from bind)
    (["serve", "--free", "--price-msat", "100"], "not both"),  # was a free provider, silently
    (["wallet", "fund", "-5", "--wallet", "dev:///tmp/never-created.sqlite"], "negative number"),
    (["config", "set", "max_msat", "-1"], "negative number"),
    (["wallet", "fund", "9223372036854775807", "--wallet", "dev:///tmp/never-created.sqlite"], "2100000000000000000"),
    (["wallet", "balance", "--wallet", "dev:///tmp/never-created.sqlite?acount=alice"], "'acount'"),
    (["config", "set", "wallet", "foo://bar"], "scheme"),
    (["config", "set", "wallet", "dev:///tmp/never-created.sqlite?acount=alice"], "'acount'"),
    (["ask", "--relay", "http://127.0.0.1:7777", "hi"], "--relay"),
], ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else None)
async def test_what_the_second_trial_typed_is_a_usage_error_that_says_why(tmp_path, argv, says):
    code, out, err = await pylon(*argv, home=tmp_path, env=cli_env(tmp_path, PYLON_RELAYS=CLOSED))
    assert code == 2 and says in err and "Traceback" not in err and "bug:" not in err, (code, err)
    assert not (tmp_path / "config.toml").exists() or "foo://" not in (tmp_path / "config.toml").read_text()
    assert not Path("/tmp/never-created.sqlite").exists()
