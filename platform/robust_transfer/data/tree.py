"""A folder, or a .tar.gz/.tgz archive of one, seen as {relative POSIX path: bytes}.

Archives are streamed and read in memory, never extracted, and refused whole if any member could
escape the folder (absolute path, '..') or is a link or device: a downloaded archive is untrusted.
"""
from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTS)


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_EXTS)


def _keep(path: str) -> bool:
    # images and small text files (labels, class lists) are all any reader here needs
    return is_image(path) or path.lower().endswith(".txt")


def _safe_member_name(member: tarfile.TarInfo, archive: Path) -> str:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"archive {archive} has an unsafe member {name!r} (absolute path or '..'); refusing to read it")
    if member.issym() or member.islnk():
        raise DataError(f"archive {archive} has a link member {name!r}; refusing to read it")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"archive {archive} has a special member {name!r} (device or fifo); refusing to read it")
    return str(PurePosixPath(*[p for p in parts if p not in (".", "")])) if parts else ""


class FileTree:
    """The image and .txt files under `root` (a folder or a tar archive), by relative path."""

    def __init__(self, root: Path, *, progress: bool = True):
        self.root = root
        self._blobs: dict[str, bytes] | None = None
        if root.is_dir():
            paths = []
            for dirpath, _, files in os.walk(root):
                rel = Path(dirpath).relative_to(root)
                paths += [(rel / f).as_posix() for f in files if _keep(f)]
            self.paths = sorted(paths)
        elif root.is_file() and is_archive(root):
            self._blobs = self._read_archive(root, progress)
            self.paths = sorted(self._blobs)
        else:
            raise DataError(f"{root} is neither a folder nor a .tar.gz/.tgz archive")

    @staticmethod
    def _read_archive(path: Path, progress: bool) -> dict[str, bytes]:
        blobs: dict[str, bytes] = {}
        size = path.stat().st_size
        try:
            with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar, \
                    tqdm(total=size, desc=f"reading {path.name}", unit="B", unit_scale=True,
                         disable=not progress, leave=False) as bar:
                for member in tar:  # streaming: members arrive in archive order, one pass
                    name = _safe_member_name(member, path)
                    if member.isfile() and _keep(name):
                        blobs[name] = tar.extractfile(member).read()
                    bar.update(raw.tell() - bar.n)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"cannot read archive {path}: {e}") from None
        return blobs

    def read(self, path: str) -> bytes:
        if self._blobs is not None:
            return self._blobs[path]
        try:
            return (self.root / path).read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {self.root / path}: {e.strerror or e}") from None

    def top_prefix(self) -> str:
        """'name/' when every file sits under one top-level folder that is not itself a class
        folder (all files at least two levels below it), else ''."""
        tops = {p.split("/", 1)[0] for p in self.paths}
        if len(tops) == 1 and all(p.count("/") >= 2 for p in self.paths if is_image(p)):
            return tops.pop() + "/"
        return ""
