"""Which process owns something, and whether it still lives: what a `kill -9` leaves behind is found by the
next start, not by the process that was killed (it has no chance to clean up).

- `identity()`: this process as (host, pid, start) — `start` is the kernel's start time of the pid (Linux
  /proc/<pid>/stat field 22, clock ticks since boot, with the boot id), so a pid the kernel has since given to
  another process does not count as the same process. `is_gone(host, pid, start)`: True only when the owner
  was on this host and that process no longer exists (a process elsewhere is never judged from here).
- `scratch_dir(parent, prefix)`: a temporary folder whose name records its owner; `remove_stale(parent, prefix)`
  removes the folders of owners that are gone (and, for names that record no owner, e.g. written by an older
  version, those untouched for `LEGACY_AGE_S`). Downloads (`.download-<name>-`), imports (`rtl-import-`) and
  their checkpoint siblings use them.
- MLflow runs record the same identity as tags (tracking/runs.py: `rtl.host`, `rtl.pid`, `rtl.pid_start`).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

LEGACY_AGE_S = 24 * 3600   # a scratch folder whose name records no owner: removed once untouched this long


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def start_time(pid: int) -> str:
    """The kernel's start time of `pid` ('<boot id>.<ticks>'), '' where it cannot be read (not Linux, no such pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may hold spaces or ')': fields after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    return f"{_boot_id()}.{fields[19]}" if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: it exists
        return True
    return True


def identity() -> tuple[str, int, str]:
    """(host name, pid, start time) of this process."""
    return socket.gethostname(), os.getpid(), start_time(os.getpid())


def is_gone(host: str, pid: int, start: str = "") -> bool:
    """True when the process (`host`, `pid`, `start`) ran on this host and has ended; False while it may live,
    or when it ran elsewhere (unknowable from here)."""
    if host != socket.gethostname() or pid <= 0:
        return False
    if not pid_alive(pid):
        return True
    now = start_time(pid)
    return bool(start and now and now != start)   # the pid was reused by another process


# --- scratch folders named after their owner ---------------------------------------------------------------

def _host_tag(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


_OWNER = re.compile(r"^(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>[0-9a-f]*\.?\d*)-")


def scratch_dir(parent: str | Path, prefix: str) -> Path:
    """A new folder `<parent>/<prefix><host>-<pid>-<start>-<random>` (created; the caller removes it)."""
    host, pid, start = identity()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_host_tag(host)}-{pid}-{start}-", dir=parent))


def _stale(entry: Path, prefix: str) -> bool:
    m = _OWNER.match(entry.name[len(prefix):])
    if m is None:   # no owner in the name (an older version's folder): by age
        try:
            return time.time() - entry.lstat().st_mtime > LEGACY_AGE_S
        except OSError:
            return False
    if m["host"] != _host_tag(socket.gethostname()):
        return False
    return is_gone(socket.gethostname(), int(m["pid"]), m["start"])


def remove_stale(parent: str | Path, prefix: str) -> list[Path]:
    """Remove `<parent>/<prefix>*` folders whose owner process is gone; the folders removed."""
    removed = []
    try:
        entries = [p for p in Path(parent).iterdir() if p.name.startswith(prefix)]
    except OSError:   # no such folder, or not readable: nothing of ours to clean
        return removed
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink() and _stale(entry, prefix):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
