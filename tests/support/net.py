"""Servers in tests: a free loopback port, and "start a server, wait until it answers"."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path



def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(proc: subprocess.Popen, log: Path | None) -> str:
    if log is not None:
        return log.read_text(errors="replace")[-1500:]
    if proc.stderr is not None and proc.poll() is not None:   # a pipe is safe to drain only once it has exited
        out = proc.stderr.read()
        return (out.decode(errors="replace") if isinstance(out, bytes) else out)[-1500:]
    return ""


def wait_http(url: str, proc: subprocess.Popen, *, timeout: float = 120, headers: dict | None = None,
              log: Path | None = None) -> bytes:
    """Poll `url` until it answers 200 and return the body; fail the test (with the tail of `log`, or of the
    process's stderr pipe) if `proc` exits first or nothing answers within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return r.read()
        except OSError:   # not listening yet (URLError), or not ready (an HTTP error status)
            pass
        assert proc.poll() is None, f"the server exited ({proc.returncode}) before {url} answered: {_tail(proc, log)}"
        assert time.monotonic() <= deadline, f"{url} did not answer within {timeout:.0f} s: {_tail(proc, log)}"
        time.sleep(0.5)
