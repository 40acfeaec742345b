"""Live settings for `pylon serve` (SIGHUP / `pylon serve reload`): apply a re-read configuration
to a running provider without dropping a job.

What changes live: prices (per job, per 1k tokens), max_tokens cap, the models offered (when
named), the partial interval, the drain timeout; the announcement is published again at once with
them. A job already quoted keeps its price (its amount is in the job store), so running and
waiting jobs are unaffected; the next quote uses the new price. What needs a restart (the
wallet, free/priced, relays, backend, concurrency, the metrics port) is logged and left as it is.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("pylon.serve")

RESTART_ONLY = ("wallet", "relays", "backend", "backend_api_key", "concurrency", "metrics_port", "metrics_host",
                "free", "tools", "log_format", "workers")


def apply_settings(provider: Any, old: Any, new: Any) -> list[str]:
    """Copy what can change live from `new` onto `provider`; returns 'name: old -> new' lines."""
    changes: list[str] = []
    routed = bool(getattr(provider, "model_prices", None))
    if routed and (old.models != new.models or old.price_msat != new.price_msat
                   or old.price_per_1k_tokens_msat != new.price_per_1k_tokens_msat):
        log.warning("reload: [[models]] and prices of a several-model provider take effect on the next start")
    if not provider.free and not routed:
        for name in ("price_msat", "price_per_1k_tokens_msat"):
            before, after = getattr(provider, name), int(getattr(new, name))
            if before != after:
                setattr(provider, name, after)
                changes.append(f"{name}: {before} -> {after}")
        if provider.price_msat == 0 and provider.price_per_1k_tokens_msat == 0:
            log.warning("reload: a price of 0 on a priced provider still invoices 0 msat jobs; restart with --free "
                        "to serve without invoices")
    if provider.max_tokens_cap != new.max_tokens_cap:
        changes.append(f"max_tokens_cap: {provider.max_tokens_cap} -> {new.max_tokens_cap}")
        provider.max_tokens_cap = int(new.max_tokens_cap)
    if not routed and new.models and new.model_names != provider.served_models:
        changes.append(f"models: {','.join(provider.served_models)} -> {','.join(new.model_names)}")
        provider.served_models = new.model_names
        provider.models_explicit = True
    interval = new.partial_interval_ms / 1000
    if provider.partial_interval_s != interval:
        changes.append(f"partial_interval_ms: {old.partial_interval_ms} -> {new.partial_interval_ms}")
        provider.partial_interval_s = interval
    for name in RESTART_ONLY:
        if getattr(old, name, None) != getattr(new, name, None):
            log.warning("reload: %s changed in the configuration; it takes effect on the next start", name)
    return changes


async def reload_provider(provider: Any, old: Any, new: Any) -> list[str]:
    """Apply `new` and announce at once (no announcement while paused, draining or unhealthy)."""
    changes = apply_settings(provider, old, new)
    if changes:
        log.info("reloaded: %s", "; ".join(changes))
    else:
        log.info("reloaded: nothing that can change live has changed")
    if provider.pool is not None:
        await provider.announce()
    return changes
