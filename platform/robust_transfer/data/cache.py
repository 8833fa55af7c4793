"""Decode-once cache: a decoded split as a memory-mapped uint8 array under cache_dir()/decoded/.

Layout: one directory per (source, split, content) holding
    images.u8    the images, uint8 [N, 3, H, W], C order, no header (opened with np.memmap)
    labels.i64   the labels, int64 [N]
    meta.json    shape, class names, the ImageData sha256, what was skipped while decoding
It is built chunk by chunk (a chunk of decoded images is written, then dropped), so building and
reading both stay far below the size of the split in memory: training reads batches through the
mapping and `release()` hands touched pages back to the page cache.

The key is the source's name (with its decode options, e.g. `imagefolder-r224`), the split,
FORMAT_VERSION and the content of the data: for an archive or a CIFAR file the sha256 of its
bytes (memoised by path, size, mtime, ctime and inode: editing a file changes its ctime even if
its mtime is put back); for a folder the sha256 of every image file's bytes with its relative
path, read in full on every load (no memo: a same-size edit with its mtime restored is seen). A
directory is built under a temporary name and renamed into place under a file lock; a directory
that does not check out (sizes, labels, meta) is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import sys
import tempfile
import weakref
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from filelock import FileLock

from ..digests import file_sha256
from ..errors import DataError
from ..io import atomic_write_bytes
from .paths import cache_dir

FORMAT_VERSION = 2  # 2: memory-mapped directories (1 was one safetensors file)
IMAGES, LABELS, META = "images.u8", "labels.i64", "meta.json"


class Decoded:
    """A full decoded split: images (memory-mapped when cached), labels, classes, and its facts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes, sha256: str | None = None,
                 skipped: dict | None = None):
        self.images, self.labels, self.classes = images, labels, tuple(classes)
        self.sha256, self.skipped = sha256, dict(skipped or {})

    def __iter__(self):  # (images, labels, classes), as the readers' tuples
        return iter((self.images, self.labels, self.classes))


# --- pages of memory-mapped splits -------------------------------------------------------------------------

_MAPS: list[tuple[int, int, weakref.ref]] = []


def _register(arr: np.memmap) -> None:
    start = arr.ctypes.data
    _MAPS[:] = [m for m in _MAPS if m[2]() is not None]
    _MAPS.append((start, start + arr.nbytes, weakref.ref(arr)))


def release(t: torch.Tensor) -> None:
    """If `t` is a memory-mapped split, drop its pages from this process's resident set (MADV_DONTNEED).
    They stay in the page cache, so the next read is a cheap minor fault; RSS stays bounded by
    what is touched between two calls instead of growing to the size of the split."""
    if t.device.type != "cpu" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    ptr = t.untyped_storage().data_ptr()
    for start, end, ref in _MAPS:
        arr = ref()
        if arr is not None and start <= ptr < end and getattr(arr, "_mmap", None) is not None:
            arr._mmap.madvise(mmap.MADV_DONTNEED)


class ReleasingReader:
    """Counts bytes read from a mapped split and releases its pages every `every` bytes."""

    def __init__(self, t: torch.Tensor, every: int = 32 << 20):
        self.t, self.every, self.n = t, every, 0

    def touched(self, nbytes: int) -> None:
        self.n += nbytes
        if self.n >= self.every:
            release(self.t)
            from .decode import return_freed_memory

            return_freed_memory()  # and the batch-sized buffers glibc would otherwise keep
            self.n = 0


# --- keys ---------------------------------------------------------------------------------------------

def memoised_file_sha256(path: Path) -> str:
    """`digests.file_sha256`, memoised in cache_dir()/file-hashes.json by (path, size, mtime, ctime, inode)."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    index_path = cache_dir() / "file-hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}  # missing or corrupt index: just hash again
    if key in index:
        return index[key]
    index[key] = file_sha256(path)
    try:  # a lost race between two processes, or a read-only cache dir, only costs a re-hash later
        index_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(index_path, json.dumps(index, indent=0).encode())
    except OSError:
        pass
    return index[key]


def folder_content_sha256(root: Path) -> str:
    """sha256 over every readable image/.txt file under `root` (the files a FileTree reads): path and bytes."""
    from .tree import read_regular_file, walk_folder

    files, _ = walk_folder(root)
    h = hashlib.sha256()
    for rel in sorted(files):
        try:
            data = read_regular_file(files[rel])
        except OSError:
            data = b"<unreadable>"
        h.update(f"{rel}|{len(data)}|".encode())
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update((f"dir {folder_content_sha256(p)}\n" if p.is_dir() else f"file {memoised_file_sha256(p)}\n").encode())
    return h.hexdigest()


def cache_path(source: str, split: str, paths: list[Path]) -> Path:
    key = hashlib.sha256(f"v{FORMAT_VERSION}|{source}|{split}|{fingerprint(paths)}".encode()).hexdigest()[:24]
    return cache_dir() / "decoded" / f"{source}-{split}-{key}"


# --- writing ------------------------------------------------------------------------------------------

class SplitWriter:
    """Receives a split chunk by chunk; on disk (into `directory`) or, without one, in memory."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.file = open(directory / IMAGES, "wb") if directory is not None else None
        self.chunks: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.shape: tuple[int, int, int] | None = None
        self.n = 0
        self.skipped: Counter = Counter()

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) == 0:
            return
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [n, 3, H, W], got {images.dtype} {list(images.shape)}")
        if self.shape is None:
            self.shape = tuple(images.shape[1:])
        elif tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"chunk of size {tuple(images.shape[1:])} after {self.shape}")
        images = images.contiguous()
        if self.file is not None:
            self.file.write(memoryview(images.numpy()).cast("B"))
        else:
            self.chunks.append(images)
        self.labels.append(labels.to(torch.int64))
        self.n += len(images)

    def finish(self, classes, what: str) -> Decoded:
        if self.n == 0:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
            raise DataError(f"{what}: no usable images" + (f" (skipped: {reasons})" if reasons else ""))
        labels = torch.cat(self.labels)
        shape = (self.n, *self.shape)
        if self.file is None:
            images = torch.cat(self.chunks)
            return Decoded(images, labels, classes, skipped=self.skipped)
        self.file.close()
        labels.numpy().tofile(self.directory / LABELS)
        sha = _sha256_of(self.directory / IMAGES, shape, labels)
        meta = {"format_version": FORMAT_VERSION, "shape": list(shape), "classes": list(classes), "sha256": sha,
                "skipped": dict(self.skipped)}
        (self.directory / META).write_text(json.dumps(meta))
        return Decoded(None, labels, classes, sha, self.skipped)  # images: opened from disk by the caller

    def abort(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()


def _sha256_of(images_path: Path, shape, labels: torch.Tensor) -> str:
    """ImageData.sha256 of the split, computed from the file (streamed, not mapped: RSS stays small)."""
    h = hashlib.sha256(repr(tuple(shape)).encode())
    with open(images_path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    h.update(labels.contiguous().numpy().data)
    return h.hexdigest()


# --- reading ------------------------------------------------------------------------------------------

def _read(path: Path, warn: bool = True) -> Decoded | None:
    """The cached split, memory-mapped, or None if it is absent or does not check out."""
    if not path.is_dir():
        return None
    try:
        meta = json.loads((path / META).read_text())
        shape = tuple(int(v) for v in meta["shape"])
        classes = tuple(str(c) for c in meta["classes"])
        ok = (meta.get("format_version") == FORMAT_VERSION and len(shape) == 4 and shape[1] == 3 and shape[0] > 0
              and (path / IMAGES).stat().st_size == int(np.prod(shape))
              and (path / LABELS).stat().st_size == 8 * shape[0])
        if ok:
            labels = torch.from_numpy(np.fromfile(path / LABELS, dtype=np.int64))
            ok = int(labels.min()) >= 0 and int(labels.max()) < len(classes)
        if ok:
            arr = np.memmap(path / IMAGES, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write: never written back
            _register(arr)
            return Decoded(torch.from_numpy(arr), labels, classes, str(meta["sha256"]), meta.get("skipped"))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if warn:
        print(f"warning: cached data {path} is corrupt; rebuilding it", file=sys.stderr)
    return None


def load_or_build(source: str, split: str, paths: list[Path], build: Callable[[SplitWriter], tuple],
                  what: str | None = None) -> Decoded:
    """The decoded split from the cache, building (decoding) it once if needed.

    `build(writer)` adds the split chunk by chunk (`writer.add`, `writer.skipped`) and returns its
    class names.
    """
    what = what or source
    path = cache_path(source, split, paths)
    if (data := _read(path)) is not None:
        return data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as e:  # a read-only or full cache dir must not stop training: decode without caching
        print(f"warning: cannot use the cache in {path.parent} ({e}); decoding without caching", file=sys.stderr)
        return _build_in_memory(build, what)
    try:
        # another process may have built it while we waited for the lock
        if (data := _read(path, warn=False)) is not None:
            return data
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)  # a corrupt one
        try:
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        except OSError as e:
            print(f"warning: cannot write the cache in {path.parent} ({e}); decoding without caching", file=sys.stderr)
            return _build_in_memory(build, what)
        writer = SplitWriter(tmp)
        try:
            classes = build(writer)
            writer.finish(classes, what)
            os.rename(tmp, path)
        except OSError as e:  # disk full, read-only: decode again into memory, just do not cache it
            writer.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"warning: cannot write the cache {path} ({e}); decoding without caching", file=sys.stderr)
            return _build_in_memory(build, what)
        except BaseException:
            writer.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        data = _read(path)
        if data is None:
            raise DataError(f"{what}: the decoded cache {path} does not read back")
        return data
    finally:
        lock.release()


def _build_in_memory(build, what: str) -> Decoded:
    writer = SplitWriter(None)
    classes = build(writer)
    return writer.finish(classes, what)
