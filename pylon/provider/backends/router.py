"""Several models on several backends behind one provider (`[[models]]` in config.toml).

`ModelRouter` looks like one OpenAIBackend to the Provider (health, stream_chat,
count_prompt_tokens, aclose, base_url) and sends each call to the backend serving the job's
model, with that model's own concurrency limit (a semaphore per model, so a slow model cannot
take every slot of a fast one; the provider's `concurrency` still bounds the total).

Health is probed on every backend at once; the models reported are those whose backend is up
(and lists the model, when it lists any), so the provider's announcement and its intake follow
what can be served right now: one model's backend going down withdraws that model only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from pylon.errors import ConfigError
from pylon.provider.backends.errors import BackendRejected
from pylon.provider.backends.models import BackendHealth, ChatChunk, ChatRequest
from pylon.provider.backends.openai import OpenAIBackend


@dataclass(slots=True)
class ModelRoute:
    """One `[[models]]` entry: the model's name, its backend and its concurrency."""

    name: str
    backend: OpenAIBackend
    max_concurrency: int = 32
    price_msat: int | None = None  # None: the provider's price
    price_per_1k_tokens_msat: int | None = None


class ModelRouter:
    """One backend facade over several (model -> backend) routes."""

    def __init__(self, routes: Sequence[ModelRoute]) -> None:
        if not routes:
            raise ConfigError("[[models]] needs at least one entry with a name and a backend")
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[models]] names a model twice: {', '.join(sorted(n for n in names if names.count(n) > 1))}")
        self.routes = {r.name: r for r in routes}
        self._slots = {r.name: asyncio.Semaphore(max(1, r.max_concurrency)) for r in routes}
        self.base_url = ", ".join(dict.fromkeys(r.backend.base_url for r in routes))

    def __repr__(self) -> str:
        return f"ModelRouter({', '.join(f'{n}@{r.backend.base_url}' for n, r in self.routes.items())})"

    def _route(self, model: str) -> ModelRoute:
        route = self.routes.get(model)
        if route is None:
            raise BackendRejected(404, f"model {model!r} is not served here")
        return route

    async def health(self) -> BackendHealth:
        backends = list(dict.fromkeys(r.backend for r in self.routes.values()))
        results = await asyncio.gather(*(b.health() for b in backends))
        by_backend = dict(zip(backends, results))
        models: list[str] = []
        contexts: dict[str, int] = {}
        errors: list[str] = []
        for name, route in self.routes.items():
            h = by_backend[route.backend]
            if not h.ok:
                errors.append(f"{name}: {h.error}")
                continue
            if h.models and name not in h.models:
                errors.append(f"{name}: not listed by {route.backend.base_url}")
                continue
            models.append(name)
            if name in h.context_lengths:
                contexts[name] = h.context_lengths[name]
        return BackendHealth(ok=bool(models), models=models, context_lengths=contexts,
                             error="; ".join(errors) or None)

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        route = self._route(req.model)
        async with self._slots[req.model]:
            async for chunk in route.backend.stream_chat(req):
                yield chunk

    async def complete_chat(self, req: ChatRequest) -> ChatChunk:
        route = self._route(req.model)
        async with self._slots[req.model]:
            return await route.backend.complete_chat(req)

    async def count_prompt_tokens(self, model: str, messages: list[dict[str, Any]]) -> int | None:
        return await self._route(model).backend.count_prompt_tokens(model, messages)

    def prices(self, default_msat: int, default_per_1k_msat: int) -> dict[str, tuple[int, int]]:
        """model -> (price per job, per 1k tokens), the provider's price where an entry names none."""
        return {name: (default_msat if r.price_msat is None else r.price_msat,
                       default_per_1k_msat if r.price_per_1k_tokens_msat is None else r.price_per_1k_tokens_msat)
                for name, r in self.routes.items()}

    async def aclose(self) -> None:
        for backend in dict.fromkeys(r.backend for r in self.routes.values()):
            await backend.aclose()
