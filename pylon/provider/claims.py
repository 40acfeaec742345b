"""Who owns a job when several worker processes share one job store (`pylon serve --workers N`).

A worker's id names its process: `w<slot>:<pid>:<start time>` (the start time in clock ticks
since boot, from /proc, so a pid the kernel hands out again later is not mistaken for the old
worker). A job row's `claimed_by` holds the id of the worker that runs it; a job is taken over
by another worker only when its owner is provably gone (`worker_alive` is False), never on a
timeout, so a slow or busy worker can never have its job run a second time under it.

The job store is SQLite on a local disk, so all workers are on one host and a pid check is
exact; no leases or clocks are involved.
"""

from __future__ import annotations

import os


def _start_ticks(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), '' where /proc is missing, None if
    the process is gone or a zombie (dead but not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else ""
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else ""


def worker_id(slot: int, pid: int | None = None) -> str:
    """This process's worker id for `slot` (see the module docstring)."""
    pid = os.getpid() if pid is None else pid
    return f"w{slot}:{pid}:{_start_ticks(pid) or ''}"


def worker_alive(wid: str) -> bool:
    """False only when the worker named `wid` has certainly exited (pid gone, a zombie, or the pid
    now belongs to a process started later); an id we cannot read is treated as alive."""
    try:
        _, pid_text, ticks = wid.split(":")
        pid = int(pid_text)
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid belongs to another user's process now: ours is gone
        return False
    now = _start_ticks(pid)
    if now is None:
        return False
    return not (ticks and now and now != ticks)
