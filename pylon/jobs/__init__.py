"""Wire formats: NIP-90 job events (kind 5050/6050/7000) and NIP-89 announcements.

No I/O here beyond what discovery needs from the pool; both sides of a job read and
write the events through these modules, so the wire format lives in one place.
"""
