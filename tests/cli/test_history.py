"""`pylon history` as real processes: every ask recorded (answered or not), 0600, text only
with history.save_text, --json and filters."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.cli.stack import serving

pytestmark = pytest.mark.timeout(300)


async def test_every_ask_is_recorded_with_text_only_when_asked(relay_url, openai_double, tmp_path):
    async with serving(relay_url, openai_double.base_url, tmp_path) as stack:
        assert (await stack.ask("first secret prompt"))[0] == 0
        code, _, err = await stack.ask("x", "--model", "nope", "--provider", stack.provider_keys.npub)
        assert code == 4, err  # a failed ask is recorded too
        assert (await stack.run("config", "set", "history.save_text", "true"))[0] == 0
        assert (await stack.ask("-s", "be brief", "second prompt", "--model", openai_double.model))[0] == 0

        db = stack.home / "history.sqlite"
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600

        code, out, err = await stack.run("history", "--json")
        assert code == 0, err
        newest, failed, oldest = json.loads(out)
        assert [e["status"] for e in (newest, failed, oldest)] == ["ok", "error", "ok"]
        assert oldest["prompt"] is None and oldest["answer"] is None  # save_text was off
        assert oldest["prompt_chars"] == len("first secret prompt") and oldest["completion_tokens"] > 0
        assert oldest["provider"] == stack.provider_keys.public_key and oldest["msat"] == 0
        assert oldest["model"] == openai_double.model and oldest["latency_s"] > 0 and oldest["job_id"]
        assert "not served here" in failed["error"] and failed["model"] == "nope"
        assert len(failed["job_id"] or "") == 64  # the job was published before it failed: its id is kept
        assert newest["prompt"] == "second prompt" and newest["system"] == "be brief"
        assert newest["answer"].endswith("second prompt")
        assert b"first secret prompt" not in db.read_bytes()

        code, out, _ = await stack.run("history", "--json", "--errors")
        assert [e["status"] for e in json.loads(out)] == ["error"]
        code, out, _ = await stack.run("history", "--json", "--model", "nope")
        assert len(json.loads(out)) == 1
        code, out, _ = await stack.run("history", "--json", "-n", "1", "--since", "1h")
        assert [e["id"] for e in json.loads(out)] == [newest["id"]]
        code, out, _ = await stack.run("history", "--json", "--search", "second")
        assert len(json.loads(out)) == 1
        code, out, _ = await stack.run("history", "--json", "--paid")
        assert json.loads(out) == []  # free jobs only so far
        code, out, err = await stack.run("history", "--since", "yesterday-ish")
        assert code == 2 and "--since expects" in err
        code, out, _ = await stack.run("history")
        assert code == 0 and "second prompt" in out and "error" in out
        npub = stack.provider_keys.npub
        assert npub[:16] in out and stack.provider_keys.public_key[:12] not in out  # tables name npubs
        for form in (npub, stack.provider_keys.public_key):  # --provider takes the npub as well as hex
            code, out, err = await stack.run("history", "--json", "--provider", form)
            assert code == 0 and len(json.loads(out)) == 3, (form, err)
            assert json.loads(out)[0]["provider"] == stack.provider_keys.public_key  # JSON keeps hex
        code, out, err = await stack.run("history", "--provider", "npub1garbage")
        assert code == 2 and "--provider" in err
