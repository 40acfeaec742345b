"""`pylon gateway`: the swarm behind an OpenAI-compatible HTTP endpoint.

`Gateway` (app.py) maps OpenAI requests to NIP-90 jobs through one shared `PylonClient`;
`schema.py` validates request bodies; `responses.py` builds OpenAI's response, chunk and
error shapes; `server.py` runs it on aiohttp until a signal.
"""

from pylon.gateway.app import Gateway, GatewayError
from pylon.gateway.server import GatewayServer, is_loopback, require_safe_bind

__all__ = ["Gateway", "GatewayError", "GatewayServer", "is_loopback", "require_safe_bind"]
