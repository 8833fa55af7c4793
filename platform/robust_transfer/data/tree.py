"""A folder, or a .tar.gz/.tgz archive of one, seen as {relative POSIX path: bytes}.

Archives are streamed and read in memory, never extracted, and refused whole if any member could
escape the folder (absolute path, '..') or is a link or device: a downloaded archive is untrusted.
Sizes are checked from each member's header BEFORE its bytes are read: a member over MAX_FILE_BYTES is
skipped (counted) unread, and an archive whose kept members add up to more than MAX_ARCHIVE_BYTES is
refused (a 1 MB .tar.gz can hold a 1 GiB member of zeros).
Folders get the same rules, applied per file (a user's folder is skipped around, not refused):
only regular files are read (a FIFO, socket or device named like an image is never opened, so it
cannot hang a run); a symlink counts only if it resolves to a regular file inside the folder;
files over MAX_FILE_BYTES, dangling symlinks and names that are not UTF-8 are skipped. What was
skipped is counted (`FileTree.skipped`) and reported in one warning line.
"""
from __future__ import annotations

import os
import stat
import sys
import tarfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..errors import DataError
from ..progress import bar_disabled

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")
MAX_FILE_BYTES = 64 << 20     # one image file; the largest real photos are a few tens of MB
MAX_ARCHIVE_BYTES = 4 << 30   # an archive's kept members, held in memory (Tiny-ImageNet's: 210 MiB)
EMPTY_CLASS = "empty class folder"   # a skip reason that counts folders, not files


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


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # os.walk gives undecodable bytes as lone surrogates, which do not encode
        return True
    except UnicodeEncodeError:
        return False


def walk_folder(root: Path, dirs_out: set[str] | None = None) -> tuple[dict[str, Path], Counter]:
    """{relative POSIX path: the real path to open} for the image and .txt files under `root` that are
    safe to read, and a Counter of what was skipped, by reason; `dirs_out` receives the folders walked."""
    real_root = Path(os.path.realpath(root))
    found: dict[str, Path] = {}
    skipped: Counter = Counter()
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        keep_dirs = []
        for d in sorted(dirs):
            if not _utf8(d):
                skipped["name not UTF-8"] += 1
            elif os.path.islink(os.path.join(dirpath, d)):
                skipped["symlinked folder"] += 1  # never followed: it could loop or leave the folder
            else:
                keep_dirs.append(d)
                if dirs_out is not None:
                    dirs_out.add((rel_dir / d).as_posix())
        dirs[:] = keep_dirs
        for f in files:
            if not _keep(f):
                continue
            if not _utf8(f) or not _utf8(str(rel_dir)):
                skipped["name not UTF-8"] += 1
                continue
            path = Path(dirpath) / f
            try:
                st = os.stat(path)  # follows a symlink: what would actually be read
            except OSError:
                skipped["dangling symlink" if os.path.islink(path) else "unreadable"] += 1
                continue
            if os.path.islink(path):
                target = Path(os.path.realpath(path))
                if real_root not in target.parents:
                    skipped["symlink out of the folder"] += 1
                    continue
                path = target
            if not stat.S_ISREG(st.st_mode):
                skipped["not a regular file"] += 1  # FIFO, socket, device: never opened
                continue
            if st.st_size > MAX_FILE_BYTES:
                skipped[f"larger than {MAX_FILE_BYTES >> 20} MB"] += 1
                continue
            found[(rel_dir / f).as_posix()] = path
    return found, skipped


def read_regular_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, opened so that a FIFO or device put in its place cannot block
    (O_NONBLOCK) and checked again on the open descriptor; at most `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise OSError(f"{path} is larger than {limit >> 20} MB")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def describe_skipped(skipped: Counter, what: str) -> str:
    files = {r: n for r, n in skipped.items() if r != EMPTY_CLASS}
    said = []
    if files:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(files.items()))
        said.append(f"skipped {sum(files.values())} files ({parts})")
    if skipped.get(EMPTY_CLASS):
        said.append(f"dropped {skipped[EMPTY_CLASS]} {EMPTY_CLASS}s (no images in them)")
    return f"warning: {what}: " + "; ".join(said)


class FileTree:
    """The image and .txt files under `root` (a folder or a tar archive), by relative path."""

    def __init__(self, root: Path, *, progress: bool = True):
        self.root = root
        self._blobs: dict[str, bytes] | None = None
        self._real: dict[str, Path] = {}
        self.skipped: Counter = Counter()
        self.dirs: set[str] = set()   # every folder, relative POSIX path (empty ones included)
        if root.is_dir():
            self._real, self.skipped = walk_folder(root, self.dirs)
            self.paths = sorted(self._real)
        elif root.is_file() and is_archive(root):
            self._blobs = self._read_archive(root, progress)
            self.paths = sorted(self._blobs)
        else:
            raise DataError(f"{root} is neither a folder nor a .tar.gz/.tgz archive")

    def _read_archive(self, path: Path, progress: bool) -> dict[str, bytes]:
        blobs: dict[str, bytes] = {}
        size, total = path.stat().st_size, 0
        try:
            with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar, \
                    tqdm(total=size, desc=f"reading {path.name}", unit="B", unit_scale=True,
                         disable=bar_disabled(progress), leave=False) as bar:
                for member in tar:  # streaming: members arrive in archive order, one pass
                    name = _safe_member_name(member, path)
                    if member.isdir() and name:
                        self.dirs.add(name)
                    elif member.isfile() and _keep(name) and member.size > MAX_FILE_BYTES:
                        self.skipped[f"larger than {MAX_FILE_BYTES >> 20} MB"] += 1   # by its header: never read
                    elif member.isfile() and _keep(name):
                        total += member.size
                        if total > MAX_ARCHIVE_BYTES:
                            raise DataError(f"archive {path} holds more than {MAX_ARCHIVE_BYTES >> 30} GiB of images "
                                            f"(they are read into memory); extract it and give the folder instead")
                        blobs[name] = tar.extractfile(member).read()
                    bar.update(raw.tell() - bar.n)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"cannot read archive {path}: {e}") from None
        return blobs

    def read(self, path: str) -> bytes:
        if self._blobs is not None:
            return self._blobs[path]
        try:
            return read_regular_file(self._real[path])
        except OSError as e:
            raise DataError(f"cannot read {self.root / path}: {e.strerror or e}") from None

    def warn_skipped(self, what: str) -> None:
        if self.skipped:
            print(describe_skipped(self.skipped, what), file=sys.stderr)

    def top_prefix(self) -> str:
        """'name/' when every file sits under one top-level folder that is not itself a class
        folder (all files at least two levels below it), else ''."""
        tops = {p.split("/", 1)[0] for p in self.paths}
        if len(tops) == 1 and all(p.count("/") >= 2 for p in self.paths if is_image(p)):
            return tops.pop() + "/"
        return ""
