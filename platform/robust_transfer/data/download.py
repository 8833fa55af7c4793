"""`download=true`: fetch CIFAR-10, CIFAR-100 or Tiny-ImageNet from their public locations into the
data root, checked against their published md5 and size.

    RTL_DATA_MIRROR=https://my.mirror/datasets   fetch <mirror>/<archive file name> instead
                                                  (cifar-10-python.tar.gz, cifar-100-python.tar.gz,
                                                  tiny-imagenet-200.zip); md5 and size are checked all the same.

The network is untrusted: a server that never answers, or answers a byte at a time, or claims (or sends)
more than the archive's published size is abandoned with one line (DataError, exit 3):
- connect: `CONNECT_TIMEOUT_S` to open the connection (TCP and TLS);
- stall: the transfer is abandoned when fewer than `STALL_MIN_BYTES` arrived in the last `STALL_TIMEOUT_S`
  seconds — response headers included, so a server that accepts and never answers, or drips, ends within
  about CONNECT_TIMEOUT_S + STALL_TIMEOUT_S (a watchdog thread shuts the socket down: a per-read timeout alone
  never fires on a byte every few seconds);
- size: a `Content-Length` above the archive's published size (`SIZES`) is refused before the body is read,
  and reading stops as soon as the body passes it (the header may lie or be absent).
`RTL_DOWNLOAD_CONNECT_TIMEOUT` and `RTL_DOWNLOAD_STALL_TIMEOUT` (seconds) override the two timeouts.

The archive is downloaded and extracted inside a temporary folder in the data root
(`.download-<name>-<owner>-*`) and only moved into place once its checksum matched and it extracted whole:
a failed download removes it, and one a `kill -9` left behind is removed by the next download once its
process is gone (processes.remove_stale).
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..processes import remove_stale, scratch_dir

MIRROR_ENV = "RTL_DATA_MIRROR"
# name -> (public URL, md5 of the archive, the folder it extracts to)
ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 "cifar-100-python"),
    "tiny-imagenet": ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
                      "tiny-imagenet-200"),
}
# The published archives' sizes in bytes: the md5 pins their bytes, so nothing larger can ever pass.
SIZES = {"cifar10": 170_498_071, "cifar100": 169_001_437, "tiny-imagenet": 248_100_043}
DOWNLOADABLE = tuple(ARCHIVES)

CONNECT_TIMEOUT_S = 30.0
STALL_TIMEOUT_S = 60.0
STALL_MIN_BYTES = 32 << 10    # 32 KiB a minute: a 170 MB archive at that rate would take three days anyway
CHUNK = 1 << 16


def url_for(name: str) -> str:
    url = ARCHIVES[name][0]
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[1]}" if mirror else url


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise DataError(f"{env}={raw!r} is not allowed; give seconds in (0, 3600]")
    return value


class _Stalled(Exception):
    """The watchdog gave up on the transfer."""


class _Watchdog:
    """Shuts the transfer's sockets down when fewer than `min_bytes` arrived in the last `stall_s` seconds."""

    def __init__(self, stall_s: float, min_bytes: int):
        self.stall_s, self.min_bytes = stall_s, min_bytes
        self.sockets: list[socket.socket] = []
        self.received = self._mark_bytes = 0
        self._mark_time = time.monotonic()
        self.stalled = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="rtl-download-watchdog", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self.sockets.append(sock)

    def progress(self, n: int) -> None:
        self.received += n
        if self.received - self._mark_bytes >= self.min_bytes:
            self._mark_bytes, self._mark_time = self.received, time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.stall_s / 4)):
            if time.monotonic() - self._mark_time > self.stall_s:
                self.stalled = True
                with self._lock:
                    for sock in self.sockets:
                        try:   # the plain socket's shutdown: a blocked read (TLS too) returns at once
                            socket.socket.shutdown(sock, socket.SHUT_RDWR)
                        except OSError:
                            pass
                return


class _Watched:
    """Mixin for http.client connections: the read timeout and the watchdog apply from the moment it connects."""

    def __init__(self, *args, watchdog: _Watchdog, **kwargs):
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self):
        super().connect()            # bounded by the connect timeout (TCP and, for https, the TLS handshake)
        self.sock.settimeout(2 * self._watchdog.stall_s)   # a backstop: the watchdog decides first
        self._watchdog.add(self.sock)


class _HTTP(_Watched, http.client.HTTPConnection):
    pass


class _HTTPS(_Watched, http.client.HTTPSConnection):
    pass


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, redirects) over watched connections."""

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(functools.partial(_HTTP, watchdog=watchdog), req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(functools.partial(_HTTPS, watchdog=watchdog), req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def fetch(url: str, dest: Path, max_bytes: int) -> str:
    """Stream `url` into `dest` (at most `max_bytes`), under the connect/stall timeouts; the md5 of what
    was written. DataError-free: raises _Stalled, ValueError (size) or the network's own errors."""
    connect_s = _seconds("RTL_DOWNLOAD_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S)
    stall_s = _seconds("RTL_DOWNLOAD_STALL_TIMEOUT", STALL_TIMEOUT_S)
    md5 = hashlib.md5()
    with _Watchdog(stall_s, STALL_MIN_BYTES) as watchdog:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "robust-transfer"})
            with _opener(watchdog).open(req, timeout=connect_s) as resp, open(dest, "wb") as out:
                length = resp.headers.get("Content-Length")
                if length is not None and length.strip().isdigit() and int(length) > max_bytes:
                    raise ValueError(f"the server announces {int(length)} bytes, more than the archive's "
                                     f"published {max_bytes}")
                while chunk := resp.read1(CHUNK):
                    watchdog.progress(len(chunk))
                    if watchdog.received > max_bytes:
                        raise ValueError(f"the server sent more than the archive's published {max_bytes} bytes")
                    md5.update(chunk)
                    out.write(chunk)
        except Exception:
            if watchdog.stalled:   # the watchdog's shutdown surfaces as a reset, EOF or SSL error: say why
                raise _Stalled(watchdog.received) from None
            raise
        if watchdog.stalled:   # EOF after the shutdown of a body without a length reads as a normal end
            raise _Stalled(watchdog.received)
    return md5.hexdigest()


def _reason(e: BaseException, connect_s: float, stall_s: float) -> str:
    if isinstance(e, _Stalled):
        return (f"the server stalled: fewer than {STALL_MIN_BYTES >> 10} KiB in {stall_s:g} s "
                f"({e.args[0]} bytes received)")
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
        if isinstance(e, (socket.timeout, TimeoutError)):
            return f"no connection within {connect_s:g} s"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no data for {stall_s:g} s"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def download(name: str, data_dir: Path) -> Path:
    """Fetch `name` into `data_dir` (nothing is done if its folder is there); the folder it extracted to."""
    from torchvision.datasets.utils import extract_archive

    if name not in ARCHIVES:
        raise DataError(f"{name} has no public download; downloadable: {', '.join(DOWNLOADABLE)}")
    public, md5, folder = ARCHIVES[name]
    url = url_for(name)
    final = Path(data_dir) / folder
    if final.exists():
        return final
    prefix = f".download-{name}-"
    kept = f"nothing was kept in {data_dir}"
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        remove_stale(data_dir, prefix)   # what a killed download left
        tmp = scratch_dir(data_dir, prefix)
    except OSError as e:
        raise DataError(f"{name}: cannot write into the data root {data_dir}: {e.strerror or e}") from None
    try:
        connect_s = _seconds("RTL_DOWNLOAD_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S)
        stall_s = _seconds("RTL_DOWNLOAD_STALL_TIMEOUT", STALL_TIMEOUT_S)
        print(f"downloading {name} from {url} into {data_dir}", flush=True)
        archive = tmp / public.rsplit("/", 1)[1]
        try:
            got = fetch(url, archive, SIZES[name])
        except Exception as e:  # network, HTTP status, timeouts, stall, size, disk
            raise DataError(f"{name}: download from {url} failed: {_reason(e, connect_s, stall_s)}; {kept}") from None
        if got != md5:
            raise DataError(f"{name}: download from {url} failed: the file's md5 is not the published {md5} "
                            f"(corrupted or not the {name} archive); {kept}")
        try:
            extract_archive(str(archive), str(tmp))
        except Exception as e:  # disk full, a bad archive
            raise DataError(f"{name}: the archive from {url} does not extract: {_reason(e, 0, 0)}; {kept}") from None
        if not (tmp / folder).is_dir():
            raise DataError(f"{name}: the archive from {url} has no {folder}/ folder; {kept}")
        try:
            os.rename(tmp / folder, final)  # atomic: readers see no folder or the whole one
        except OSError:
            if not final.is_dir():  # (another process may have put it there first: then theirs is used)
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
