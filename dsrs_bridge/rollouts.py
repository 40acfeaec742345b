"""Refine and BestOfN on the swarm, with rollouts spread across providers for diversity.

`dspy.Refine` and `dspy.BestOfN` run their module N times, each attempt on
`lm.copy(rollout_id=i, temperature=1.0)`. With a `pylon_lm` every attempt is already its own
NIP-90 job: the rollout id is part of the request's identity, so attempts are never joined
by single-flight, and DSPy's cache keys on it too; every attempt is held against the LM's
one budget before it is published.

`spread_lm(model, providers=[...])` adds diversity: an attempt with rollout id i is sent to
`providers[i % len(providers)]` (a non-integer id picks by its hash), so N attempts ask up
to N different providers, whose models and sampling differ. A call without a rollout id
goes where the LM would send it anyway (untargeted, or `provider=`). It is a pylon_lm whose
engines pick the provider per call; DSPy's own Refine/BestOfN drive it unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, AsyncIterator, Iterator, Sequence

from dsrs_bridge.hub import JobOptions
from dsrs_bridge.lm import _ROLLOUT, AsyncPylonEngine, PylonEngine, hub_of, pylon_lm


def provider_for(rollout_id: Any, providers: Sequence[str]) -> str | None:
    """Which provider a rollout goes to (None: no rollout id, keep the LM's own choice)."""
    if rollout_id is None or not providers:
        return None
    if isinstance(rollout_id, int) and not isinstance(rollout_id, bool):
        index = rollout_id
    else:
        index = int.from_bytes(hashlib.sha256(str(rollout_id).encode()).digest()[:8], "big")
    return providers[index % len(providers)]


def _opts(base: JobOptions, providers: Sequence[str]) -> JobOptions:
    chosen = provider_for(_ROLLOUT.get(), providers)
    return base if chosen is None else dataclasses.replace(base, provider=chosen)


class SpreadEngine(PylonEngine):
    """A PylonEngine that sends each rollout to its provider (decided in the calling thread,
    where PylonLM put the rollout id)."""

    def __init__(self, hub: Any, opts: JobOptions, providers: Sequence[str]) -> None:
        super().__init__(hub, opts)
        self.providers = list(providers)

    def _engine(self) -> PylonEngine:
        return PylonEngine(self.hub, _opts(self.opts, self.providers))

    def complete(self, request: Any):
        return self._engine().complete(request)

    def stream(self, request: Any) -> Iterator[Any]:
        return self._engine().stream(request)


class AsyncSpreadEngine(AsyncPylonEngine):
    """The async twin of SpreadEngine (acall runs in the caller's task, rollout id included)."""

    def __init__(self, hub: Any, opts: JobOptions, providers: Sequence[str]) -> None:
        super().__init__(hub, opts)
        self.providers = list(providers)

    def _engine(self) -> AsyncPylonEngine:
        return AsyncPylonEngine(self.hub, _opts(self.opts, self.providers))

    async def complete(self, request: Any):
        return await self._engine().complete(request)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        async for event in self._engine().stream(request):
            yield event


def spread_lm(model: str, *, providers: Sequence[str], relays: Sequence[str], **kwargs: Any) -> Any:
    """A pylon_lm whose rollouts go round-robin to `providers` (npub or hex); the other
    arguments are pylon_lm's. Copies share one hub: one connection, one budget."""
    from pylon.nostr.keys import normalize_pubkey

    if not providers:
        raise ValueError("spread_lm needs at least one provider (npub or hex)")
    targets = [normalize_pubkey(p) for p in providers]
    base = pylon_lm(model, relays=relays, **kwargs)
    hub, opts = hub_of(base), base._engine_spec.opts
    return base.copy(engine=SpreadEngine(hub, opts, targets), async_engine=AsyncSpreadEngine(hub, opts, targets))
