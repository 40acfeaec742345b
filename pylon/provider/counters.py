"""Lifetime job counters kept by SQLite triggers inside the job store (issue 18, metrics).

Why triggers: the job store is where every outcome is decided (one conditional UPDATE per
transition, pylon.provider.jobstore), so counting there makes the metrics agree with the store
by construction, whichever code path finished the job (intake refusals, payment expiry,
restart recovery, cancellations), and counts each job once: a trigger fires only on the
transition *into* a terminal state. The counters live in their own table, so they survive
restarts and the pruning of old jobs (Prometheus counters that never go backwards), and
`/metrics` reads them with one small query at scrape time.

Counters (table `job_counters`, name + label -> value):

    received                       every request recorded (INSERT)
    finished   outcome\\x1fmodel    success | error | paid_error | expired | rejected | cancelled
    paid       model               invoices settled (count; a key-mode job when its key is bought)
    paid_msat  model               msat of settled invoices
    earned_msat model              msat of paid jobs that were delivered (`done`)
    refunded_msat                  msat refunded (refund_status -> refunded)

Outcomes: `rejected` = refused before a quote (amount unknown: model not served, queue full,
bid too low, shutting down), `expired` = invoice never paid, `paid_error` = paid then failed,
`error` = any other failure after the quote. The model label is '-' for rejected jobs, so a
stranger's model names never become label values; it is cut to 64 characters.
"""

from __future__ import annotations

import sqlite3

SEP = "\x1f"  # between outcome and model in the `finished` label

_TERMINAL = "('done', 'error', 'cancelled')"
_MODEL = "CASE WHEN NEW.amount_msat IS NULL THEN '-' ELSE substr(COALESCE(NEW.model, '-'), 1, 64) END"
_OUTCOME = ("CASE WHEN NEW.status = 'done' THEN 'success' WHEN NEW.status = 'cancelled' THEN 'cancelled'"
            " WHEN NEW.amount_msat IS NULL THEN 'rejected' WHEN NEW.error = 'invoice expired' THEN 'expired'"
            " WHEN NEW.paid_at IS NOT NULL THEN 'paid_error' ELSE 'error' END")
_BUMP = "ON CONFLICT(name, label) DO UPDATE SET value = value + excluded.value"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS job_counters (
    name  TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    value INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, label)
);
CREATE TRIGGER IF NOT EXISTS job_counters_received AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counters(name, label, value) VALUES ('received', '', 1) {_BUMP};
END;
CREATE TRIGGER IF NOT EXISTS job_counters_finished AFTER UPDATE OF status ON jobs
WHEN NEW.status IN {_TERMINAL} AND OLD.status NOT IN {_TERMINAL} BEGIN
    INSERT INTO job_counters(name, label, value) VALUES ('finished', ({_OUTCOME}) || char(31) || ({_MODEL}), 1) {_BUMP};
    INSERT INTO job_counters(name, label, value) SELECT 'earned_msat', {_MODEL}, NEW.amount_msat
        WHERE NEW.status = 'done' AND NEW.paid_at IS NOT NULL AND NEW.amount_msat > 0 {_BUMP};
END;
CREATE TRIGGER IF NOT EXISTS job_counters_paid AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'paid' AND OLD.status != 'paid' BEGIN
    INSERT INTO job_counters(name, label, value) VALUES ('paid', {_MODEL}, 1) {_BUMP};
    INSERT INTO job_counters(name, label, value) SELECT 'paid_msat', {_MODEL}, NEW.amount_msat
        WHERE NEW.amount_msat > 0 {_BUMP};
END;
"""

# Pay for the key: the sealed result goes out before anything is paid, and the key is bought
# once the customer has it, usually after the job is `done`. It can be bought before: the
# relay fans the result out before it answers OK, so the customer may pay before the
# provider marks the job published. The sale is counted when it happens (paid, paid_msat);
# earned once the job is delivered: here when it is `done` already, else by
# job_counters_finished when it gets there. (A job paid first is paid in status 'paid':
# job_counters_paid; it never has paid_at set in 'processing' or 'done'.) The trigger of
# earlier stores, job_counters_key_paid, counted only keys bought after `done`: replaced.
KEY_PAID_SCHEMA = f"""
DROP TRIGGER IF EXISTS job_counters_key_paid;
CREATE TRIGGER IF NOT EXISTS job_counters_key_sold AFTER UPDATE OF paid_at ON jobs
WHEN NEW.status IN ('processing', 'done') AND OLD.paid_at IS NULL AND NEW.paid_at IS NOT NULL BEGIN
    INSERT INTO job_counters(name, label, value) VALUES ('paid', {_MODEL}, 1) {_BUMP};
    INSERT INTO job_counters(name, label, value) SELECT 'paid_msat', {_MODEL}, NEW.amount_msat
        WHERE NEW.amount_msat > 0 {_BUMP};
    INSERT INTO job_counters(name, label, value) SELECT 'earned_msat', {_MODEL}, NEW.amount_msat
        WHERE NEW.status = 'done' AND NEW.amount_msat > 0 {_BUMP};
END;
"""

REFUND_SCHEMA = f"""
CREATE TRIGGER IF NOT EXISTS job_counters_refunded AFTER UPDATE OF refund_status ON jobs
WHEN NEW.refund_status = 'refunded' AND OLD.refund_status IS NOT 'refunded' BEGIN
    INSERT INTO job_counters(name, label, value) SELECT 'refunded_msat', '', NEW.refund_msat
        WHERE NEW.refund_msat > 0 {_BUMP};
END;
"""


def install(db: sqlite3.Connection) -> None:
    """Create the counters table and its triggers (idempotent; call once the jobs table has
    its refund columns: JobStore adds them to an older store first)."""
    db.executescript(SCHEMA)
    db.executescript(KEY_PAID_SCHEMA)
    db.executescript(REFUND_SCHEMA)


def read(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(name, label) -> value; empty when the store predates the counters."""
    try:
        return {(name, label): int(value) for name, label, value in
                db.execute("SELECT name, label, value FROM job_counters")}
    except sqlite3.OperationalError:
        return {}
