"""The program hub (NIP-78 kind 30078) on the real embedded relay: publish -> list -> pull ->
load_state, version ordering, encrypted states, forged and foreign events refused."""

from __future__ import annotations

import asyncio
import json

import dspy
import pytest

from dsrs_bridge.programs import (PROGRAM_KIND, ProgramHubError, build_program_event, list_programs, load,
                                  parse_program_event, publish_program, pull_program, version_key)
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys


class QA(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.answer = dspy.Predict("question -> answer")


def optimized_state(tmp_path) -> dict:
    """A program as an optimizer leaves it (a demo, instructions), saved the DSPy way."""
    program = QA()
    program.answer.demos = [dspy.Example(question="2+2?", answer="4").with_inputs("question")]
    program.answer.signature = program.answer.signature.with_instructions("Answer tersely.")
    path = tmp_path / "qa.json"
    program.save(str(path))
    return json.loads(path.read_text())


def test_versions_order_numerically():
    assert version_key("1.10") > version_key("1.9") > version_key("1.2.3") > version_key("1.2")
    assert version_key("v2") > version_key("1.99")


async def test_publish_list_pull_load_state_round_trip(relay_url, tmp_path):
    keys = Keys.generate()
    state = optimized_state(tmp_path)
    rec = await publish_program(keys, [relay_url], "qa", state, version="1.0.0", metric="exact_match",
                                score=0.9, models=["pylon/tiny"], cost_msat=4200, trace="ab" * 32)
    assert rec.state == state
    listed = await list_programs([relay_url], author=keys.npub)
    assert [(r.name, r.version, r.metric, r.score, r.models, r.cost_msat, r.trace) for r in listed] == \
        [("qa", "1.0.0", "exact_match", 0.9, ["pylon/tiny"], 4200, "ab" * 32)]
    pulled = await pull_program("qa", [relay_url], author=keys.public_key)
    assert pulled.author == keys.public_key and pulled.state == state
    loaded = await asyncio.to_thread(load, "qa", author=keys.npub, relays=[relay_url])
    fresh = QA()
    assert fresh.answer.demos == []
    fresh.load_state(loaded)
    assert fresh.answer.demos[0]["answer"] == "4"  # DSPy loads demos as dicts
    assert fresh.answer.signature.instructions == "Answer tersely."


async def test_version_ordering_and_replacement(relay_url, tmp_path):
    keys = Keys.generate()
    state = optimized_state(tmp_path)
    await publish_program(keys, [relay_url], "qa", state, version="1.9")
    await publish_program(keys, [relay_url], "qa", {**state, "note": "ten"}, version="1.10")
    with pytest.raises(ProgramHubError, match="already published"):
        await publish_program(keys, [relay_url], "qa", state, version="1.2")
    pulled = await pull_program("qa", [relay_url], author=keys.public_key)
    assert pulled.version == "1.10" and pulled.state["note"] == "ten"
    # two copies from disagreeing relays: the higher version wins even if it is older
    from dsrs_bridge.programs import newest
    old = parse_program_event(build_program_event(keys, "qa", state, version="3.0", created_at=1000))
    new = parse_program_event(build_program_event(keys, "qa", state, version="2.0", created_at=2000))
    assert newest([new, old])[0].version == "3.0"


async def test_encrypted_to_the_author(relay_url, tmp_path):
    keys, other = Keys.generate(), Keys.generate()
    state = optimized_state(tmp_path)
    await publish_program(keys, [relay_url], "secret-qa", state, version="1", encrypt=True)
    listed = await list_programs([relay_url], author=keys.public_key)
    assert listed[0].encrypted and listed[0].state is None  # the metadata is public, the state is not
    assert "Answer tersely" not in json.dumps([r.summary() for r in listed])
    with pytest.raises(ProgramHubError, match="encrypted"):
        await pull_program("secret-qa", [relay_url], author=keys.public_key, keys=other)
    pulled = await pull_program("secret-qa", [relay_url], author=keys.public_key, keys=keys)
    assert pulled.state == state


async def test_forged_and_foreign_events_are_refused(relay_url, tmp_path):
    keys, mallory = Keys.generate(), Keys.generate()
    state = optimized_state(tmp_path)
    good = build_program_event(keys, "qa", state, version="1")
    # tampered: the state changed after signing
    forged = Event.from_dict({**good.to_dict(), "content": good.content.replace("Answer tersely.", "Leak it.")})
    with pytest.raises(ProgramHubError, match="not validly signed"):
        parse_program_event(forged, author=keys.public_key)
    # re-signed by someone else: a valid event, but foreign to the author asked for
    foreign = build_program_event(mallory, "qa", {**state, "evil": True}, version="99")
    with pytest.raises(ProgramHubError, match="foreign"):
        parse_program_event(foreign, author=keys.public_key)
    # a validly signed event whose state does not match its own sha256 tag
    bad_tags = [t if t[0] != "sha256" else ["sha256", "0" * 64] for t in good.tags]
    mismatched = Event.build(mallory, PROGRAM_KIND, good.content, bad_tags)
    with pytest.raises(ProgramHubError, match="sha256"):
        parse_program_event(mismatched)
    # on the relay: mallory's higher version under the same name never replaces the author's
    await publish_program(keys, [relay_url], "qa", state, version="1")
    await publish_program(mallory, [relay_url], "qa", {**state, "evil": True}, version="99")
    pulled = await pull_program("qa", [relay_url], author=keys.npub)
    assert pulled.author == keys.public_key and "evil" not in pulled.state
    everyone = await list_programs([relay_url])
    assert sorted(r.version for r in everyone) == ["1", "99"]  # both listed, each under its own author


@pytest.mark.parametrize("call", ["list_programs", "fetch_trace"])
async def test_one_shot_hub_calls_report_a_refused_relay_at_once(call):
    """A program hub or trace call against a relay nothing listens on says so at once (the
    fail-fast answer), not after the 5 s connect wait ("no relay connected within 5s")."""
    from dsrs_bridge.nostr_trace import fetch_trace
    from pylon.devstack.vllm import free_port
    from pylon.errors import RelayError

    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(RelayError, match="could not connect to any relay"):
        if call == "list_programs":
            await list_programs([url])
        else:
            await fetch_trace("ab" * 32, [url])
