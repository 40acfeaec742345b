"""Transport: the relay pool (one websocket per relay, OK/EOSE/CLOSED/AUTH, reconnects)."""
