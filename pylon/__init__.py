"""Pylon: LLM inference over Nostr (NIP-90), paid with Lightning.

The public API is re-exported here and imported lazily, so ``import pylon`` stays cheap
(no websockets, httpx or pydantic until a name is used)::

    from pylon import PylonClient, Provider, RelayPool, Keys, PylonError

The subpackages follow the journeys: ``pylon.nostr`` (protocol), ``pylon.relay`` (pool),
``pylon.jobs`` (NIP-90/NIP-89 wire formats), ``pylon.customer`` (ask), ``pylon.provider``
(serve), ``pylon.ops`` (config, doctor, metrics). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pylon.version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "PylonClient": "pylon.customer.client",
    "Provider": "pylon.provider.provider",
    "OpenAIBackend": "pylon.provider.backends",
    "RelayPool": "pylon.relay.pool",
    "Keys": "pylon.nostr.keys",
    "Event": "pylon.nostr.event",
    "Filter": "pylon.nostr.filters",
    "PylonError": "pylon.errors",
    "ConfigError": "pylon.errors",
    "NostrError": "pylon.errors",
    "RelayError": "pylon.errors",
    "JobError": "pylon.errors",
    "PaymentError": "pylon.errors",
    "BackendError": "pylon.errors",
    "StorageError": "pylon.errors",
    "ListenError": "pylon.errors",
    "WalletError": "pylon.errors",
    "PaymentRefused": "pylon.errors",
    "NoProviderAnswered": "pylon.errors",
    "JobTimeout": "pylon.errors",
    "ProviderError": "pylon.errors",
    "ProviderUnavailable": "pylon.errors",
    "JobCancelled": "pylon.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from pylon.customer.client import PylonClient
    from pylon.errors import (
        BackendError, ConfigError, JobCancelled, JobError, JobTimeout, ListenError, NoProviderAnswered, PaymentError,
        PaymentRefused, ProviderError, ProviderUnavailable, PylonError, RelayError, StorageError, WalletError,
    )
    from pylon.nostr.event import Event
    from pylon.nostr.filters import Filter
    from pylon.nostr.keys import Keys
    from pylon.provider.backends import OpenAIBackend
    from pylon.provider.provider import Provider
    from pylon.relay.pool import RelayPool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pylon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
