"""Pylon: LLM inference over Nostr (NIP-90), paid with Lightning.

Kept light on purpose: importing `pylon` must not pull websockets, httpx or pydantic.
Import the pieces you need (pylon.client, pylon.provider, pylon.relay_pool, …).
"""

__version__ = "0.1.0"
