"""Transport: the relay pool. `session.py` is the protocol without I/O (OK/EOSE/CLOSED/AUTH/COUNT,
dedupe, resubscribe), `runner.py` the websockets task per relay, `pool.py` the public API."""
