"""Public keys on the command line and in the config (newcomer trial, bugs 3 and 4), as real
`pylon` processes against the real embedded relay:

- `--provider P --avoid P` (or P in the avoid setting) could never be answered: a usage error
  at once (exit 2), nothing published; it used to wait the whole timeout; a `--provider` that
  withdrew its announcement is one line at once (exit 4), not the timeout;
- `pylon config set avoid …` (and the other key lists) accepts only npubs or 64-hex keys and
  stores them as npubs; garbage is one line naming the key (it used to be accepted);
- a bad key in a hand-edited config.toml (or PYLON_AVOID) found at ask time names the setting
  and where it is set (it used to be a bare "not a public key", exit 8)."""

from __future__ import annotations

import tomllib

import pytest

from pylon.nostr.filters import Filter
from pylon.nostr.keys import Keys
from pylon.relay.pool import RelayPool
from tests.cli.stack import cli_env, pylon

pytestmark = pytest.mark.timeout(120)


async def _ask(relay_url: str, home, *args: str, **env: str) -> tuple[int, str, str]:
    return await pylon("ask", "hello", "--timeout", "600", *args, home=home, timeout=30,
                       env=cli_env(home, PYLON_RELAYS=relay_url, **env))


async def _nothing_published(relay_url: str) -> bool:
    async with RelayPool([relay_url]) as pool:
        return await pool.query([Filter.of(kinds=[5050])], timeout=5) == []


async def test_provider_also_avoided_is_a_usage_error(relay_url, tmp_path):
    p = Keys.generate()
    code, out, err = await _ask(relay_url, tmp_path / "h", "--provider", p.npub, "--avoid", p.public_key)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].startswith("hint:"), err
    assert f"--provider {p.npub} is also in --avoid" in lines[0]
    assert await _nothing_published(relay_url)


async def test_provider_in_the_avoid_setting_is_a_usage_error(relay_url, tmp_path):
    p = Keys.generate()
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text(f'avoid = ["{p.npub}"]\n')
    code, out, err = await _ask(relay_url, home, "--provider", p.public_key)
    assert code == 2 and out == "", err
    assert f"--provider {p.npub} is also in the avoid setting ({home / 'config.toml'})" in err
    assert await _nothing_published(relay_url)


async def test_config_set_avoid_refuses_garbage_and_stores_npubs(tmp_path):
    home = tmp_path / "h"
    code, out, err = await pylon("config", "set", "avoid", "npub1garbage", home=home)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert lines[0].startswith("error: avoid: npub1garbage") and len(lines) <= 2, err
    assert not (home / "config.toml").exists()

    a, b = Keys.generate(), Keys.generate()
    code, out, err = await pylon("config", "set", "avoid", f"{a.public_key}, {b.npub},{a.npub}", home=home)
    assert code == 0, err
    assert tomllib.loads((home / "config.toml").read_text())["avoid"] == [a.npub, b.npub]  # normalized, once each
    assert out.startswith(f"avoid = {a.npub}, {b.npub}")

    for key in ("trusted_reviewers", "provider.allow", "provider_deny"):
        code, _, err = await pylon("config", "set", key, "deadbeef", home=home)
        assert code == 2 and "is not a public key" in err, (key, err)


async def test_bad_avoid_in_the_config_file_names_the_key_and_the_file(relay_url, tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('avoid = ["npub1garbage"]\n')
    code, out, err = await _ask(relay_url, home)
    assert code == 2 and out == "", err
    assert "setting avoid" in err and str(home / "config.toml") in err and "npub1garbage" in err
    assert "Traceback" not in err and await _nothing_published(relay_url)

    code, _, err = await _ask(relay_url, home, PYLON_AVOID="zzz")
    assert code == 2 and "setting avoid in PYLON_AVOID" in err, err


async def test_withdrawn_provider_is_one_line_at_once(relay_url, tmp_path):
    """`--provider P` where P withdrew its announcement: exit 4 with P's npub, not the timeout."""
    from tests.market.test_targeted_gone import _withdrawn

    gone = await _withdrawn(relay_url)
    try:
        code, out, err = await _ask(relay_url, tmp_path / "h", "--provider", gone.keys.npub)
    finally:
        await gone.__aexit__(None, None, None)
    lines = err.strip().splitlines()
    assert code == 4 and out == "", err
    assert len(lines) == 2 and lines[1].startswith("hint:"), err
    assert f"error: provider {gone.keys.npub} withdrew its announcement" in lines[0]


async def test_bad_trusted_reviewer_in_the_config_names_the_key_and_the_file(relay_url, tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('trusted_reviewers = ["deadbeef"]\n')
    code, out, err = await pylon("providers", home=home, timeout=30, env=cli_env(home, PYLON_RELAYS=relay_url))
    assert code == 2 and out == "", err
    assert "setting trusted_reviewers in" in err and str(home / "config.toml") in err and "Traceback" not in err
