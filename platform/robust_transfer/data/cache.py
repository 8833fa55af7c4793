"""Decode-once cache: a decoded split as one safetensors file under cache_dir()/decoded/.

The key is a content hash of the source (sha256 of each file's bytes; for an extracted folder,
of its file listing with sizes and mtimes), the source name, the split and FORMAT_VERSION, so
any change to the data gives a new file and copying or touching an archive does not. File
hashes are memoised by (path, size, mtime_ns) so a second load does not re-read 150 MB.
Files are written atomically (temp file + os.replace) under a file lock, and a file that does
not load (truncated, corrupt) is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

from ..io import atomic_write, atomic_write_bytes
from .paths import cache_dir

FORMAT_VERSION = 1  # bump when the decoded layout or the order of examples changes
Decoded = tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, memoised in cache_dir()/file-hashes.json by (path, size, mtime)."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = cache_dir() / "file-hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}  # missing or corrupt index: just hash again
    if key in index:
        return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    index[key] = h.hexdigest()
    try:  # a lost race between two processes, or a read-only cache dir, only costs a re-hash later
        index_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(index_path, json.dumps(index, indent=0).encode())
    except OSError:
        pass
    return index[key]


def _folder_fingerprint(root: Path) -> str:
    # hashing every file of a 100k-image folder would cost as much as decoding it; the listing
    # with sizes and mtimes changes whenever a file is added, removed or rewritten
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update((f"dir {_folder_fingerprint(p)}\n" if p.is_dir() else f"file {file_sha256(p)}\n").encode())
    return h.hexdigest()


def cache_path(source: str, split: str, paths: list[Path]) -> Path:
    key = hashlib.sha256(f"v{FORMAT_VERSION}|{source}|{split}|{fingerprint(paths)}".encode()).hexdigest()[:24]
    return cache_dir() / "decoded" / f"{source}-{split}-{key}.safetensors"


def _read(path: Path, warn: bool = True) -> Decoded | None:
    """The cached split, or None if the file is absent or does not load cleanly."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            classes = tuple(json.loads(f.metadata()["classes"]))
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
        ok = (images.dtype == torch.uint8 and images.dim() == 4 and labels.dtype == torch.int64
              and labels.shape == images.shape[:1] and (len(labels) == 0 or int(labels.max()) < len(classes)))
        if ok:
            return images, labels, classes
    except Exception:  # safetensors raises its own error types for truncated/corrupt files
        pass
    if warn:
        print(f"warning: cached data {path} is corrupt; rebuilding it", file=sys.stderr)
    return None


def _write(path: Path, data: Decoded) -> None:
    images, labels, classes = data
    # readers see the old file or the whole new one, never a partial one
    atomic_write(path, lambda tmp: save_file({"images": images.contiguous(), "labels": labels.contiguous()}, tmp,
                                             metadata={"classes": json.dumps(list(classes)),
                                                       "format_version": str(FORMAT_VERSION)}))


def load_or_build(source: str, split: str, paths: list[Path], build: Callable[[], Decoded]) -> Decoded:
    """The decoded split from the cache, building (decoding) it once if needed."""
    path = cache_path(source, split, paths)
    if (data := _read(path)) is not None:
        return data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as e:  # a read-only or full cache dir must not stop training: decode without caching
        print(f"warning: cannot use the cache in {path.parent} ({e}); decoding without caching", file=sys.stderr)
        return build()
    try:
        # another process may have built it while we waited for the lock
        if (data := _read(path, warn=False)) is not None:
            return data
        data = build()
        try:
            _write(path, data)
        except Exception as e:  # disk full, read-only: keep the decoded data, just do not cache it
            print(f"warning: cannot write the cache file {path} ({e})", file=sys.stderr)
        return data
    finally:
        lock.release()
