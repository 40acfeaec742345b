"""One worker of `pylon serve --workers N`, started by pylon.provider.workers.Supervisor (not by hand).

Its settings come on stdin as JSON ({"overrides": the command's flags, "verbose", "count"}), so
a wallet secret given as a flag never shows on a command line; PYLON_WORKER_SLOT says which
worker it is. It then serves like `pylon serve` (config.toml and PYLON_* read again, the same
identity and job store), without the home lock, which its supervisor holds.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import typer

from cli.common import fail, handle_errors, run, setup_logging
from cli.defaults import load_settings


@handle_errors
def serve_worker() -> None:
    """Read the spec from stdin and serve as worker PYLON_WORKER_SLOT."""
    from cli.serve_cmd import _serve_locked

    if "PYLON_WORKER_SLOT" not in os.environ:
        fail("cli.serve_worker is started by `pylon serve --workers N`, not by hand", code=2)
    spec = json.loads(sys.stdin.read())
    slot = int(os.environ["PYLON_WORKER_SLOT"])
    settings = load_settings(spec["overrides"])
    setup_logging(bool(spec.get("verbose")), settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run(_serve_locked(settings, spec["overrides"], worker=(slot, int(spec["count"]))))


def main() -> None:
    try:
        serve_worker()
    except typer.Exit as exc:  # handle_errors said what happened in one line
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
