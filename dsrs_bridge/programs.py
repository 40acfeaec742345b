"""The program hub: optimized DSPy programs shared as signed NIP-78 application data.

A program's saved state (`program.save("x.json")`, i.e. `dump_state()` plus DSPy's
metadata) is published as one addressable event, kind 30078, `d` = the program's name, so
the relays keep one current version per (author, name) and a new version replaces the
last. Tags say what it is without opening it:

    ["d", name], ["t", "pylon-program"], ["version", v], ["metric", m], ["score", "0.93"],
    ["model", m]..., ["cost", msat], ["trace", root event id], ["sha256", hex of the state],
    ["encrypted", "nip44"] (content NIP-44-encrypted to the author), ["alt", ...] (NIP-31).

The event is signed, so a user knows who optimized the program. Reading checks the
signature, the author (an event by anyone else is foreign and refused), the kind, the
`d` tag and the sha256 of the state, so a tampered or foreign event never reaches
`program.load_state`. Versions are ordered (numeric dotted parts compare as numbers:
1.10 > 1.9); when relays disagree the highest version wins, and `publish_program`
refuses a version not above the one already published unless `force=True`.

Why not `dsrs_bridge.hub`: that module is the shared clients/budget hub behind pylon_lm.
This module is the program hub; `dsrs_bridge.hub.load` forwards to `load` here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pylon.errors import PylonError
from pylon.nostr.errors import InvalidEvent
from pylon.nostr.event import Event
from pylon.nostr.keys import Keys, normalize_pubkey

PROGRAM_KIND = 30078  # NIP-78 application-specific data (addressable)
PROGRAM_TOPIC = "pylon-program"
NIP44_MAX_PLAINTEXT = 65535
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class ProgramHubError(PylonError):
    """A program could not be published, found or trusted."""


@dataclass
class ProgramRecord:
    """One published program version, verified (and decrypted when it was encrypted for us)."""

    name: str
    version: str
    author: str
    event_id: str
    created_at: int
    metric: str | None = None
    score: float | None = None
    models: list[str] = field(default_factory=list)
    cost_msat: int | None = None
    trace: str | None = None
    encrypted: bool = False
    state: dict[str, Any] | None = None  # None: encrypted for someone else

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "author": self.author, "event_id": self.event_id,
                "created_at": self.created_at, "metric": self.metric, "score": self.score, "models": self.models,
                "cost_msat": self.cost_msat, "trace": self.trace, "encrypted": self.encrypted}


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions: dotted parts, numbers as numbers (1.10 > 1.9 > 1.9rc), text after."""
    parts = re.split(r"[.\-+]", version.strip().lstrip("vV"))
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def _check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ProgramHubError(f"a program name is 1-128 letters, digits, '.', '_', '-' or '/': {name!r}")
    return name


def state_json(state: dict[str, Any]) -> str:
    """The canonical text of a state (what the sha256 tag covers)."""
    return json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_program_event(keys: Keys, name: str, state: dict[str, Any], *, version: str, metric: str | None = None,
                        score: float | None = None, models: Sequence[str] = (), cost_msat: int | None = None,
                        trace: str | None = None, encrypt: bool = False, created_at: int | None = None) -> Event:
    """A signed kind-30078 event carrying `state` (a dict as program.save writes it)."""
    _check_name(name)
    if not isinstance(state, dict):
        raise ProgramHubError("a program state is a JSON object (program.save('x.json') writes one)")
    if not version or len(version) > 64:
        raise ProgramHubError("a program version is 1-64 characters, e.g. 1.0.0")
    text = state_json(state)
    tags: list[list[str]] = [["d", name], ["t", PROGRAM_TOPIC], ["version", version],
                             ["sha256", hashlib.sha256(text.encode("utf-8")).hexdigest()]]
    if metric:
        tags.append(["metric", metric])
    if score is not None:
        tags.append(["score", repr(float(score))])
    tags += [["model", m] for m in models]
    if cost_msat is not None:
        if cost_msat < 0:
            raise ProgramHubError("cost is a non-negative number of msats")
        tags.append(["cost", str(int(cost_msat))])
    if trace:
        tags.append(["trace", trace])
    content = text
    if encrypt:
        from pylon.nostr.crypto import encrypt_to

        if len(text.encode("utf-8")) > NIP44_MAX_PLAINTEXT:
            raise ProgramHubError(f"the state is {len(text.encode('utf-8'))} bytes; NIP-44 encrypts at most "
                                  f"{NIP44_MAX_PLAINTEXT}: publish it unencrypted or with fewer demos")
        content = encrypt_to(keys, keys.public_key, text)
        tags.append(["encrypted", "nip44"])
    tags.append(["alt", f"Pylon optimized DSPy program {name} version {version}"])
    return Event.build(keys, PROGRAM_KIND, content, tags, created_at=created_at)


def parse_program_event(event: Event, *, author: str | None = None, name: str | None = None,
                        keys: Keys | None = None) -> ProgramRecord:
    """Verify and read one program event; raises ProgramHubError when it can't be trusted."""
    try:
        event.verify()
    except InvalidEvent as exc:
        raise ProgramHubError(f"program event {event.id[:12]}… is not validly signed: {exc}") from None
    if author is not None and event.pubkey != normalize_pubkey(author):
        raise ProgramHubError(f"program event {event.id[:12]}… is signed by someone else (foreign)")
    if event.kind != PROGRAM_KIND or PROGRAM_TOPIC not in event.tag_values("t"):
        raise ProgramHubError(f"event {event.id[:12]}… is not a Pylon program")
    d = event.d_tag()
    if name is not None and d != name:
        raise ProgramHubError(f"event {event.id[:12]}… is program {d!r}, not {name!r}")
    version = (event.first_tag("version") or ["", ""])[1:2]
    digest = (event.first_tag("sha256") or ["", ""])[1:2]
    if not version or not version[0] or not digest:
        raise ProgramHubError(f"program event {event.id[:12]}… lacks its version or sha256 tag")
    encrypted = (event.first_tag("encrypted") or ["", ""])[1:2] == ["nip44"]
    text: str | None = event.content
    if encrypted:
        text = None
        if keys is not None and keys.public_key == event.pubkey:
            from pylon.nostr.crypto import decrypt_from

            try:
                text = decrypt_from(keys, event.pubkey, event.content)
            except Exception:
                raise ProgramHubError(f"program event {event.id[:12]}…: the content does not decrypt") from None
    state = None
    if text is not None:
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != digest[0]:
            raise ProgramHubError(f"program event {event.id[:12]}…: the state does not match its sha256 tag")
        try:
            state = json.loads(text)
        except ValueError:
            raise ProgramHubError(f"program event {event.id[:12]}…: the state is not JSON") from None
        if not isinstance(state, dict):
            raise ProgramHubError(f"program event {event.id[:12]}…: the state is not a JSON object")
    score_tag = event.first_tag("score")
    cost_tag = event.first_tag("cost")
    try:
        score = float(score_tag[1]) if score_tag and len(score_tag) > 1 else None
        cost = int(cost_tag[1]) if cost_tag and len(cost_tag) > 1 else None
    except ValueError:
        raise ProgramHubError(f"program event {event.id[:12]}…: score or cost is not a number") from None
    metric_tag, trace_tag = event.first_tag("metric"), event.first_tag("trace")
    return ProgramRecord(name=d, version=version[0], author=event.pubkey, event_id=event.id,
                         created_at=event.created_at, metric=metric_tag[1] if metric_tag and len(metric_tag) > 1 else None,
                         score=score, models=event.tag_values("model"), cost_msat=cost,
                         trace=trace_tag[1] if trace_tag and len(trace_tag) > 1 else None,
                         encrypted=encrypted, state=state)


def newest(records: Sequence[ProgramRecord]) -> list[ProgramRecord]:
    """One record per (author, name): the highest version (then the latest event)."""
    best: dict[tuple[str, str], ProgramRecord] = {}
    for r in records:
        key = (r.author, r.name)
        cur = best.get(key)
        if cur is None or (version_key(r.version), r.created_at) > (version_key(cur.version), cur.created_at):
            best[key] = r
    return sorted(best.values(), key=lambda r: (r.name, r.author))


async def _records(pool: Any, *, author: str | None, name: str | None, keys: Keys | None,
                   timeout: float) -> list[ProgramRecord]:
    """Every trusted program event on the pool's relays (all versions); others are skipped."""
    from pylon.nostr.filters import Filter

    fields: dict[str, Any] = {}
    if author:
        fields["authors"] = [normalize_pubkey(author)]
    if name:
        fields["d"] = [_check_name(name)]
    records = []
    for event in await pool.query([Filter.of(kinds=[PROGRAM_KIND], t=[PROGRAM_TOPIC], **fields)], timeout=timeout):
        try:
            records.append(parse_program_event(event, author=author, name=name, keys=keys))
        except ProgramHubError:
            continue  # someone else's data under our kind, or a tampered copy: not a program
    return records


async def list_programs(relays: Sequence[str], *, author: str | None = None, name: str | None = None,
                        keys: Keys | None = None, timeout: float = 5.0) -> list[ProgramRecord]:
    """Published programs (newest version per author and name); untrusted events are skipped."""
    from pylon.relay.pool import RelayPool

    async with RelayPool(list(relays), keys=keys) as pool:
        await pool.wait_connected(fail_fast=True)  # a refused relay is said at once
        return newest(await _records(pool, author=author, name=name, keys=keys, timeout=timeout))


async def pull_program(name: str, relays: Sequence[str], *, author: str, keys: Keys | None = None,
                       timeout: float = 5.0) -> ProgramRecord:
    """The highest version of `name` by `author`, verified; its state decrypted when `keys` can."""
    found = await list_programs(relays, author=author, name=name, keys=keys, timeout=timeout)
    if not found:
        raise ProgramHubError(f"no program {name!r} by {normalize_pubkey(author)[:12]}… on the relays")
    record = found[0]
    if record.state is None:
        raise ProgramHubError(f"program {name!r} is encrypted to its author; pull it with the author's key")
    return record


async def publish_program(keys: Keys, relays: Sequence[str], name: str, state: dict[str, Any], *, version: str,
                          force: bool = False, timeout: float = 5.0, **tags: Any) -> ProgramRecord:
    """Sign and publish a version; refuses one not above the version already published (unless force)."""
    from pylon.relay.pool import RelayPool

    async with RelayPool(list(relays), keys=keys) as pool:
        await pool.wait_connected(fail_fast=True)  # a refused relay is said at once
        current = await _records(pool, author=keys.public_key, name=name, keys=None, timeout=timeout)
        latest = newest(current)[0].version if current else None
        if not force and latest is not None and version_key(version) <= version_key(latest):
            raise ProgramHubError(f"{name} version {latest} is already published; "
                                  f"publish a higher version than {version} (or force)")
        # An addressable event replaces another only when newer (a tie goes to the lower id):
        # two versions published within one second must still be strictly ordered.
        created_at = max([int(time.time())] + [r.created_at + 1 for r in current])
        event = build_program_event(keys, name, state, version=version, created_at=created_at, **tags)
        await pool.publish(event)
    return parse_program_event(event, keys=keys)


def load(name: str, *, author: str, relays: Sequence[str], keys: Keys | None = None,
         timeout: float = 5.0) -> dict[str, Any]:
    """The state to hand to `program.load_state`, from the hub (sync; from a thread when a loop runs)."""
    async def go() -> dict[str, Any]:
        record = await pull_program(name, relays, author=author, keys=keys, timeout=timeout)
        return without_metadata(record.state or {})

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(go())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, go()).result()


def without_metadata(state: dict[str, Any]) -> dict[str, Any]:
    """program.save adds a "metadata" entry (dependency versions) that load_state does not take."""
    return {k: v for k, v in state.items() if k != "metadata"}
