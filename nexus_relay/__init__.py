"""nexus_relay: Pylon's embedded Nostr relay (NIP-01/09/11/40/42/45) on SQLite WAL.

    from nexus_relay import RelayConfig, running_relay
    async with running_relay() as relay:   # free port, temporary database
        print(relay.url)

Imports only pylon.errors and pylon.nostr from the project (docs/ARCHITECTURE.md; tests/test_architecture.py checks it).
"""

from nexus_relay.config import RelayConfig
from nexus_relay.server import NexusRelay, running_relay
from nexus_relay.stats import RelayStats

__all__ = ["RelayConfig", "NexusRelay", "RelayStats", "running_relay"]
