"""`download=true` (issue #14) against a local HTTP server serving CIFAR-10 in its real python-tarball
layout (pickled batches written here): torchvision's downloader, the md5 check and the extraction run
for real; RTL_DATA_MIRROR points them at the server. A wrong checksum or a missing file is one line
and leaves nothing in the data root."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from robust_transfer.data import download as dl
from robust_transfer.data import load_dataset
from robust_transfer.errors import DataError

N_PER_BATCH = 6
NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar10_tarball(path: Path, seed: int = 0) -> bytes:
    """cifar-10-python.tar.gz as published: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta,
    readme.html}, each batch a pickled dict with b'batch_label', b'labels', b'data' (uint8 [N, 3072]),
    b'filenames' (protocol 2, as the original's cPickle files)."""
    rng = np.random.default_rng(seed)

    def member(tar, name, data: bytes):
        info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            # every class in every split, cycling across batches (a validation split needs 2 per class)
            labels = [(b * N_PER_BATCH + i) % 10 for i in range(N_PER_BATCH)]
            batch = {b"batch_label": name.encode(), b"labels": labels,
                     b"data": rng.integers(0, 256, size=(N_PER_BATCH, 3072), dtype=np.uint8),
                     b"filenames": [f"img_{i}.png".encode() for i in range(N_PER_BATCH)]}
            member(tar, name, pickle.dumps(batch, protocol=2))
        member(tar, "batches.meta", pickle.dumps({b"label_names": NAMES, b"num_cases_per_batch": N_PER_BATCH,
                                                  b"num_vis": 3072}, protocol=2))
        member(tar, "readme.html", b"<html>CIFAR-10</html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that gives up mid-transfer (the failing-download cases) makes socketserver print a traceback
    to stderr, which the one-line checks read (seen in CI under load): a test server stays silent."""

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server (127.0.0.1, a free port) serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = _QuietServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


pytestmark = pytest.mark.usefixtures("own_cache")


def _served_cifar10(server, monkeypatch, *, published_md5: bool) -> tuple[bytes, str]:
    served, url = server
    blob = cifar10_tarball(served / "cifar-10-python.tar.gz")
    monkeypatch.setenv(dl.MIRROR_ENV, url)
    if not published_md5:  # the archive served here is ours: check against its md5 instead of the published one
        public, _, folder = dl.ARCHIVES["cifar10"]
        monkeypatch.setitem(dl.ARCHIVES, "cifar10", (public, hashlib.md5(blob).hexdigest(), folder))
    return blob, url


def test_mirror_env_var_changes_only_the_host():
    assert dl.url_for("cifar10") == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(dl.MIRROR_ENV, "http://mirror.example/data/")
        assert dl.url_for("cifar100") == "http://mirror.example/data/cifar-100-python.tar.gz"
        assert dl.url_for("tiny-imagenet") == "http://mirror.example/data/tiny-imagenet-200.zip"


def test_download_fetches_checks_and_extracts_cifar10(tmp_path, server, monkeypatch):
    _served_cifar10(server, monkeypatch, published_md5=False)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="pass --download"):
        load_dataset("cifar10", "train", data_dir=root)  # without download: says how
    train = load_dataset("cifar10", "train", data_dir=root, download=True, progress=False)
    test = load_dataset("cifar10", "test", data_dir=root, progress=False)
    assert train.images.shape == (5 * N_PER_BATCH, 3, 32, 32) and len(test) == N_PER_BATCH
    assert train.classes == tuple(n.decode() for n in NAMES)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no archive, no temp folder left
    # the pixels are the pickled rows, as R, G, B planes
    with tarfile.open(server[0] / "cifar-10-python.tar.gz") as tar:
        batch = pickle.load(tar.extractfile("cifar-10-batches-py/test_batch"))
    order = np.argsort(batch[b"labels"], kind="stable")
    assert np.array_equal(test.images.numpy(), batch[b"data"][order].reshape(-1, 3, 32, 32))


def test_download_flag_of_a_command(tmp_path, server, monkeypatch, workdir):
    from robust_transfer.cli import main

    _served_cifar10(server, monkeypatch, published_md5=False)
    rc = main(["train", "--dataset", "cifar10", "--download", "true", "--data-dir", str(tmp_path / "d2"), "--val-per-class", "1",
               "--iterations", "1", "--batch-size", "8", "--n-examples", "4", "--eval-steps", "1", "--progress", "false"])
    assert rc == 0 and (tmp_path / "d2" / "cifar-10-batches-py" / "data_batch_5").is_file()


@pytest.mark.parametrize("fault", ["wrong-checksum", "missing-file", "truncated"])
def test_a_failed_download_is_one_line_and_leaves_nothing(tmp_path, server, monkeypatch, capfd, fault):
    from robust_transfer.cli import main

    served, url = server
    blob, _ = _served_cifar10(server, monkeypatch, published_md5=(fault == "wrong-checksum"))
    if fault == "missing-file":
        (served / "cifar-10-python.tar.gz").unlink()
    elif fault == "truncated":
        (served / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
    root = tmp_path / "data"
    root.mkdir()
    (root / "mine.txt").write_text("a user's file")
    with pytest.raises(DataError) as e:
        dl.download("cifar10", root)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "nothing was kept" in msg
    if fault in ("wrong-checksum", "truncated"):
        assert "md5" in msg
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]  # no partial archive or folder
    capfd.readouterr()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc = main(["evaluate", "--model", str(tmp_path / "nomodel"), "--dataset", "cifar10", "--download", "true",
               "--data-dir", str(root)])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc in (3, 4) and len(err) == 1 and err[0].startswith("error: ")


def test_demo_uses_the_mirror_when_present_else_downloads_cifar10(tmp_path, server, monkeypatch):
    from robust_transfer.demo import parse_args, prepare_data

    mirror = tmp_path / "shared"
    mirror.mkdir()
    (mirror / "cifar10-jpeg.tar.gz").write_bytes(b"placeholder")
    args = parse_args(["--data-dir", str(mirror)])
    prepare_data(args)
    assert (args.source, args.target, args.data_dir) == ("cifar10-jpeg:half-a", "cifar10-jpeg:half-b", str(mirror))

    _served_cifar10(server, monkeypatch, published_md5=False)
    fresh = tmp_path / "home" / ".cache" / "robust-transfer" / "data"
    monkeypatch.setenv("RTL_DATA_DIR", str(fresh))
    args = parse_args([])
    prepare_data(args)
    assert (args.source, args.target) == ("cifar10:half-a", "cifar10:half-b")
    assert (fresh / "cifar-10-batches-py" / "batches.meta").is_file() and args.data_dir == str(fresh)


# ------------------------------------------------------------------------------------------------------------
# Issue 28: a server that never answers, drips, or claims (or sends) more than the archive's size. Real socket
# servers on 127.0.0.1; the timeouts are made short through the same environment variables a user would set.
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


class _RawServer:
    """A TCP server on 127.0.0.1 whose every connection is handled by `behave(conn)` in its own thread."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.behave, self.stop, self.conns = behave, threading.Event(), []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            self.behave(conn, self.stop)
        except OSError:   # the client gave up: what the tests expect
            pass

    def close(self):
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


def _silent(conn, stop):          # accepts, reads the request, never answers
    conn.recv(4096)
    stop.wait(60)


def _drip_headers(conn, stop):    # answers one byte at a time, forever
    conn.recv(4096)
    for b in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000:
        if stop.wait(0.3):
            return
        conn.sendall(bytes([b]))


def _drip_body(conn, stop):       # headers at once, then a byte every 0.3 s
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while not stop.wait(0.3):
        conn.sendall(b"x")


def _claims_1e13(conn, stop):     # a Content-Length of 10^13, then as much as it can
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000000\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"\0" * 65536)


def _endless_no_length(conn, stop):  # no Content-Length (the header lies by omission): an endless body
    conn.recv(4096)
    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"\0" * 65536)


FAULTS = {"never-answers": (_silent, "stalled"), "drips-headers": (_drip_headers, "stalled"),
          "drips-body": (_drip_body, "stalled"), "claims-1e13-bytes": (_claims_1e13, "announces 10000000000000 bytes"),
          "endless-without-length": (_endless_no_length, "sent more than")}


@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setenv("RTL_DOWNLOAD_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("RTL_DOWNLOAD_STALL_TIMEOUT", "1.5")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_hostile_server_ends_the_download_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, short_timeouts, fault):
    behave, needle = FAULTS[fault]
    server = _RawServer(behave)
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    monkeypatch.setitem(dl.SIZES, "cifar10", 2 << 20)   # (the endless body stops at the published size: 2 MB here)
    root = tmp_path / "data"
    root.mkdir()
    (root / "mine.txt").write_text("a user's file")
    t0 = time.monotonic()
    try:
        with pytest.raises(DataError) as e:
            dl.download("cifar10", root)
    finally:
        server.close()
    took = time.monotonic() - t0
    msg = str(e.value)
    assert "\n" not in msg and needle in msg and server.url in msg and "nothing was kept" in msg, msg
    assert took < 2 + 1.5 + 5, took     # the connect and stall timeouts, and a margin (real ones: 30 s + 60 s)
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]   # no partial archive, no .download-* folder


def test_the_default_timeouts_end_a_dead_server_within_two_minutes():
    """The defaults a user gets: a silent server costs the connect timeout plus one stall window, < 2 minutes."""
    assert dl.CONNECT_TIMEOUT_S + dl.STALL_TIMEOUT_S + 1 < 120
    assert dl.STALL_MIN_BYTES >= 1024 and dl.SIZES["cifar10"] == 170_498_071


@pytest.mark.parametrize("value", ["0", "-1", "abc", "99999"])
def test_a_bad_timeout_setting_is_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv("RTL_DOWNLOAD_STALL_TIMEOUT", value)
    with pytest.raises(DataError, match="RTL_DOWNLOAD_STALL_TIMEOUT"):
        dl.download("cifar10", tmp_path)


def test_a_killed_download_is_cleaned_by_the_next_start(tmp_path, server, monkeypatch):
    """`kill -9` of a real download process leaves its .download-* folder; the next download removes it (its
    process is gone), keeps the folder of a download still running, and an old folder with no owner."""
    from robust_transfer.processes import scratch_dir

    monkeypatch.setenv("RTL_DOWNLOAD_STALL_TIMEOUT", "60")
    drip = _RawServer(_drip_body)
    root = tmp_path / "data"
    root.mkdir()
    code = ("import sys; from pathlib import Path; from robust_transfer.data import download as dl\n"
            "dl.download('cifar10', Path(sys.argv[1]))\n")
    env = {**os.environ, dl.MIRROR_ENV: drip.url, "PYTHONPATH": str(Path(dl.__file__).parents[2])}
    victim = subprocess.Popen([sys.executable, "-c", code, str(root)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any((p / "cifar-10-python.tar.gz").exists() for p in root.glob(".download-*")):
            assert victim.poll() is None, victim.stderr.read()
            time.sleep(0.1)
        victim.kill()   # SIGKILL: no chance to clean up
        victim.wait()
    finally:
        drip.close()
    left = [p.name for p in root.iterdir()]
    assert len(left) == 1 and left[0].startswith(".download-cifar10-"), left
    alive = scratch_dir(root, ".download-cifar10-")           # this test's own process: alive
    legacy = root / ".download-cifar10-abc123"                 # an older version's name: kept while recent
    legacy.mkdir()
    _served_cifar10(server, monkeypatch, published_md5=False)
    dl.download("cifar10", root)
    assert sorted(p.name for p in root.iterdir()) == sorted(["cifar-10-batches-py", alive.name, legacy.name])


def test_a_silent_server_through_a_command_is_one_line_exit_3(tmp_path, monkeypatch, short_timeouts, capfd):
    from robust_transfer.cli import main

    server = _RawServer(_silent)
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    capfd.readouterr()
    try:
        rc = main(["train", "--dataset", "cifar10", "--download", "true", "--data-dir", str(tmp_path / "d"),
                   "--iterations", "1", "--progress", "false"])
    finally:
        server.close()
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert rc == 3 and len(err) == 1 and err[0].startswith("error: cifar10: download from") and "stalled" in err[0], err
    assert not list((tmp_path / "d").iterdir())
