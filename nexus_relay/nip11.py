"""NIP-11 relay information document, served on the websocket port over plain HTTP GET.

The `limitation` object is generated from the same RelayConfig the relay enforces, so the
document can never advertise a limit that differs from the one applied.
"""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from nexus_relay.config import RelayConfig

NOSTR_JSON = "application/nostr+json"


def info_document(config: RelayConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": config.name,
        "description": config.description,
        "supported_nips": sorted(config.supported_nips),
        "software": config.software,
        "version": config.version,
        "limitation": {
            "max_message_length": config.max_message_bytes,
            "max_content_length": config.max_event_bytes,
            "max_subscriptions": config.max_subscriptions,
            "max_filters": config.max_filters,
            "max_limit": config.max_limit,
            "default_limit": config.max_limit,
            "max_subid_length": config.max_subid_length,
            "max_event_tags": config.max_event_tags,
            "min_pow_difficulty": config.min_pow_difficulty,
            "auth_required": config.auth_required,
            "payment_required": False,
            "restricted_writes": config.auth_required,
            "created_at_upper_limit": config.max_future_seconds,
            # nexus extensions (docs/HARDENING.md): what one connection may hold and use
            "max_filter_values": config.max_filter_values,
            "max_subscription_values": config.max_subscription_values,
            "max_outbox_bytes": config.max_outbox_bytes,
            "max_pending_queries": config.max_pending_queries,
            "query_max_seconds": config.query_max_seconds,
            "query_max_rows": config.query_max_rows,
            "query_max_bytes": config.query_max_bytes,
            "query_seconds_per_second": config.query_seconds_per_second,
            "max_numeric_value": config.max_numeric,
        },
    }
    if config.pubkey:
        doc["pubkey"] = config.pubkey
    if config.contact:
        doc["contact"] = config.contact
    return doc


def _cors(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET"
    return response


def process_request(config: RelayConfig, connection: ServerConnection, request: Request) -> Response | None:
    """websockets' process_request hook: answer NIP-11 and plain HTTP, let upgrades through."""
    accept = request.headers.get("Accept", "")
    if NOSTR_JSON in accept:
        response = connection.respond(200, json.dumps(info_document(config), ensure_ascii=False) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = NOSTR_JSON
        return _cors(response)
    if "websocket" not in request.headers.get("Upgrade", "").lower():
        return _cors(connection.respond(200, "This is a Nostr relay (nexus). Connect with a websocket client.\n"))
    return None
