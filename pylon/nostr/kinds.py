"""Kind numbers and NIP-01 kind classes used across the project."""

METADATA = 0
TEXT_NOTE = 1
CONTACTS = 3
ENCRYPTED_DM = 4
DELETION = 5
AUTH = 22242
JOB_REQUEST_TEXT = 5050
JOB_RESULT_TEXT = 6050
JOB_FEEDBACK = 7000
HANDLER_INFO = 31990
NWC_INFO = 13194
NWC_REQUEST = 23194
NWC_RESPONSE = 23195


def is_replaceable(kind: int) -> bool:
    """Kinds 0, 3 and 10000-19999: one event per (pubkey, kind)."""
    return kind in (0, 3) or 10000 <= kind < 20000


def is_ephemeral(kind: int) -> bool:
    """Kinds 20000-29999: delivered to live subscribers, never stored."""
    return 20000 <= kind < 30000


def is_addressable(kind: int) -> bool:
    """Kinds 30000-39999: one event per (pubkey, kind, d-tag)."""
    return 30000 <= kind < 40000


def is_regular(kind: int) -> bool:
    """Everything else is stored as-is."""
    return not (is_replaceable(kind) or is_ephemeral(kind) or is_addressable(kind))
