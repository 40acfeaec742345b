"""Failing fast, as real processes: bad parameters are refused before anything is sent, a
refused relay connection is reported at once (not after the connect timeout), a targeted
provider's error ends the ask."""

from __future__ import annotations

import pytest

from nexus_relay import running_relay
from pylon.nostr.filters import Filter
from pylon.relay.pool import RelayPool
from tests.cli.stack import cli_env, pylon, serving

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("args, message", [
    (["--temperature", "9"], "temperature must be between 0 and 2, got 9"),
    (["--temperature", "-1"], "temperature must be between 0 and 2"),
    (["--max-tokens", "0"], "max_tokens must be an integer of at least 1"),
    (["--timeout", "0"], "--timeout must be at least 0.1"),
    (["--max-msat", "-5"], "--max-msat must be at least 0"),
])
async def test_bad_parameters_never_reach_the_relay(args, message, tmp_path):
    async with running_relay(tmp_path / "r.sqlite") as relay:
        home = tmp_path / "home"
        code, out, err = await pylon("ask", "hello", *args, home=home,
                                     env=cli_env(home, PYLON_RELAYS=relay.url))
        assert code == 2 and out == "", err
        assert message in err and len(err.strip().splitlines()) <= 2 and "Traceback" not in err
        async with RelayPool([relay.url]) as pool:
            assert await pool.query([Filter.of(kinds=[5050])], timeout=5) == []  # nothing was published


@pytest.mark.parametrize("argv", [["ask", "hello"], ["providers"]], ids=lambda a: a[0])
async def test_refused_relay_is_reported_without_waiting(tmp_path, argv):
    from pylon.devstack.vllm import free_port

    home = tmp_path / "home"
    url = f"ws://127.0.0.1:{free_port()}"
    code, out, err = await pylon(*argv, "--relay", url, home=home)
    assert code == 3 and out == ""
    # the early answer, not the one given after waiting out the 5 s connect timeout
    assert "could not connect to any relay" in err and "within" not in err
    assert "ConnectionRefused" in err and url in err and "hint: is a relay running there?" in err


async def test_targeted_provider_error_is_reported(relay_url, openai_double, tmp_path):
    openai_double.max_context = 16  # the prompt below cannot fit: the provider refuses it
    async with serving(relay_url, openai_double.base_url, tmp_path) as stack:
        code, out, err = await stack.ask("word " * 40, "--provider", stack.provider_keys.npub)
    assert code == 4 and out == ""
    assert "prompt too long" in err and "context is 16 tokens" in err and "Traceback" not in err
