"""Dataset sources: where each dataset lives under the data dir, and how to read one full split.

Every reader writes the whole split, before any class selection, chunk by chunk into a
`cache.SplitWriter` (images uint8 [n, 3, H, W] with their int64 labels, ordered by class then file
name) and returns the class names. Image readers take `resize` (the spec's `resize=R`).
"""
from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tqdm import tqdm

from ..errors import DataError
from . import decode
from ..progress import bar_disabled
from .cache import SplitWriter
from .spec import DatasetSpec
from .tree import EMPTY_CLASS, FileTree, is_archive, is_image

Classes = tuple[str, ...]
CHUNK_BYTES = 256 << 20   # file bytes read ahead of decoding (a chunk of large files stays this size)


@dataclass
class Source:
    name: str                                 # cache namespace: "cifar10", "tiny-imagenet", "imagefolder-r224", ...
    files: Callable[[str], list[Path]]        # split -> the files/folders whose content identifies it
    read: Callable[[str, bool, SplitWriter], Classes]  # (split, progress, writer) -> class names


# ---------------------------------------------------------------------------------------------
# CIFAR-10/100 in torchvision's pickle layout

try:  # numpy >= 2 moved the module; old pickles name numpy.core, new ones numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1"): a pure data
    # transform (codecs are looked up only in the `encodings` package), no user code
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch needs nothing else, and a
    pickle that asks for any other callable could run arbitrary code."""

    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            return _PICKLE_ALLOWED[(module, name)]
        raise DataError(f"refusing to unpickle {module}.{name}: CIFAR files only hold numpy arrays and lists")


_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names_key=b"label_names", labels_key=b"labels"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names_key=b"fine_label_names", labels_key=b"fine_labels"),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... all mean "not a CIFAR file"
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR pickle (expected a dict, got {type(obj).__name__})")
    return obj


def _cifar_source(name: str, data_dir: Path, download: bool) -> Source:
    info = _CIFAR[name]
    folder = data_dir / info["folder"]
    needed = info["train"] + info["test"] + [info["meta"]]
    if not all((folder / f).is_file() for f in needed):
        if download:
            _download(name, data_dir)
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{name}: {folder} is missing {', '.join(missing)}; pass --download to fetch it, "
                            f"or --data-dir to point at the folder that holds {info['folder']}/")

    def files(split: str) -> list[Path]:
        return [folder / f for f in info[split] + [info["meta"]]]

    def read(split: str, progress: bool, writer: SplitWriter) -> Classes:
        meta = _unpickle(folder / info["meta"])
        if info["names_key"] not in meta:
            raise DataError(f"{folder / info['meta']} has no {info['names_key']!r} entry")
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[info["names_key"]])
        images, labels = [], []
        for f in info[split]:
            batch = _unpickle(folder / f)
            if b"data" not in batch or info["labels_key"] not in batch:
                raise DataError(f"{folder / f} is not a CIFAR batch (needs b'data' and {info['labels_key']!r})")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(f"{folder / f}: b'data' has shape {data.shape}, expected [N, 3072]")
            images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))  # rows are R, G, B planes
            labels.append(torch.as_tensor(np.asarray(batch[info["labels_key"]], dtype=np.int64)))
        images, labels = torch.cat(images), torch.cat(labels)
        # (mypy keeps the lists' type for the names just rebound to tensors)
        if len(labels) != len(images) or (len(labels) and (labels.min() < 0 or labels.max() >= len(classes))):  # type: ignore[attr-defined]
            raise DataError(f"{folder}: labels do not match the images or the {len(classes)} class names")
        decode.count_decoded(len(images))
        # the same order rule as the image folders: by class, then original order (stable sort)
        order = torch.sort(labels, stable=True).indices
        writer.add(images[order], labels[order])
        return classes

    return Source(name, files, read)


def _download(name: str, data_dir: Path) -> None:
    from .download import download  # URLs and md5s live there (RTL_DATA_MIRROR overrides the URL)

    download(name, data_dir)


# ---------------------------------------------------------------------------------------------
# Image folders (and .tar.gz archives of them): <root>/[train|test|val/]<class>/.../<image>

def _read_chunks(tree: FileTree, items: list[tuple[int, str]], writer: SplitWriter):
    """`items` in chunks of at most decode.CHUNK files and CHUNK_BYTES of file bytes: (chunk, blobs), a blob
    None (counted) when the file vanished or became unreadable since the listing."""
    chunk, blobs, size = [], [], 0
    for item in items:
        try:
            blob = tree.read(item[1])
        except DataError:
            blob = None
            writer.skipped["unreadable"] += 1
        chunk.append(item)
        blobs.append(blob)
        size += len(blob or b"")
        if len(chunk) >= decode.CHUNK or size >= CHUNK_BYTES:
            yield chunk, blobs
            chunk, blobs, size = [], [], 0
    if chunk:
        yield chunk, blobs


def _decode_files(tree: FileTree, items: list[tuple[int, str]], classes, desc: str, progress: bool,
                  writer: SplitWriter, resize: int | None) -> Classes:
    """Read, decode and write `items` (label, path) group by group; files that do not decode are counted."""
    items.sort()  # by class, then path
    writer.skipped.update(tree.skipped)
    first = None
    with tqdm(total=len(items), desc=desc, unit="img", disable=bar_disabled(progress), leave=False) as bar:
        for chunk, blobs in _read_chunks(tree, items, writer):
            for idx, imgs, why in decode.decode_groups(blobs, resize):
                writer.skipped.update(why)
                kept = [(img, chunk[i][0], chunk[i][1]) for i, img in zip(idx, imgs) if img is not None]
                if kept:
                    if resize is None:
                        first = decode.check_one_size([k[0] for k in kept], [k[2] for k in kept], first)
                    writer.add(torch.stack([k[0] for k in kept]), torch.tensor([k[1] for k in kept], dtype=torch.int64))
                del imgs, kept
                decode.return_freed_memory()
            del blobs
            bar.update(len(chunk))
    return tuple(classes)


def _class_files(tree: FileTree, prefix: str) -> dict[str, list[str]]:
    """{class: image paths} for images at least one folder below `prefix` (the class folder)."""
    out: dict[str, list[str]] = {}
    for p in tree.paths:
        if p.startswith(prefix) and is_image(p) and "/" in p[len(prefix):]:
            out.setdefault(p[len(prefix):].split("/", 1)[0], []).append(p)
    return out


def read_imagefolder(tree: FileTree, split: str, what: str, progress: bool, writer: SplitWriter,
                     resize: int | None = None) -> Classes:
    top = tree.top_prefix()
    folders = {p[len(top):].split("/", 1)[0] for p in tree.paths if p.startswith(top) and "/" in p[len(top):]}
    if folders & {"train", "test", "val"}:
        test_folder = "test" if "test" in folders else "val" if "val" in folders else None
        split_folders = [f for f in ("train", test_folder) if f]
        wanted = "train" if split == "train" else test_folder
        if wanted is None:
            raise DataError(f"{what} has no test split: there is no test/ or val/ folder beside train/")
        if wanted not in folders:
            raise DataError(f"{what} has no train split: there is no train/ folder beside {test_folder}/")
    else:
        if split == "test":
            raise DataError(f"{what} has no test split: it has no train/ and test/ (or val/) folders, "
                            f"so all of its images form the train split")
        split_folders, wanted = [""], ""
    per_split = {f: _class_files(tree, top + (f + "/" if f else "")) for f in split_folders}
    # one class list for both splits, so that a label means the same class in train and test
    classes = sorted(set().union(*per_split.values()))
    if not per_split[wanted]:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(tree.skipped.items()))
        raise DataError(f"{what}: no images (.jpg .jpeg .png .bmp .webp) in class folders under "
                        f"{(top + wanted) or 'its top level'}" + (f" (skipped: {skipped})" if skipped else ""))
    index = {c: i for i, c in enumerate(classes)}
    items = [(index[c], p) for c, paths in per_split[wanted].items() for p in paths]
    empty = _empty_class_folders(tree, top + (wanted + "/" if wanted else ""), per_split[wanted])
    if empty:
        writer.skipped[EMPTY_CLASS] += empty
    return _decode_files(tree, items, classes, f"decoding {tree.root.name} {split}", progress, writer, resize)


def _empty_class_folders(tree: FileTree, prefix: str, with_images: dict[str, list[str]]) -> int:
    """Class folders directly under `prefix` with no image anywhere below them: dropped, and counted."""
    folders = {d[len(prefix):] for d in tree.dirs if d.startswith(prefix) and d[len(prefix):] and "/" not in d[len(prefix):]}
    return len(folders - set(with_images) - {"train", "test", "val"})


def _open_tree(path: Path, what: str, progress: bool) -> FileTree:
    if not path.exists():
        raise DataError(f"{what}: {path} does not exist")
    if path.is_file() and not is_archive(path):
        raise DataError(f"{what}: {path} is a file but not a .tar.gz/.tgz archive; give a folder or an archive")
    return FileTree(path, progress=progress)


def _keyed(name: str, resize: int | None) -> str:
    return f"{name}-r{resize}" if resize else name


def _imagefolder_source(name: str, path: Path, resize: int | None = None) -> Source:
    what = f"{name} ({path})"  # errors name the dataset and the path
    return Source(_keyed(name, resize), lambda split: [path],
                  lambda split, progress, writer: read_imagefolder(_open_tree(path, what, progress), split, what,
                                                                   progress, writer, resize))


def _find(data_dir: Path, stem: str, name: str, hint: str) -> Path:
    for candidate in (data_dir / f"{stem}.tar.gz", data_dir / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"{name}: neither {data_dir / (stem + '.tar.gz')} nor {data_dir / stem}/ exists; {hint}")


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet-200: wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG + val_annotations.txt

def read_tiny_imagenet(tree: FileTree, split: str, what: str, progress: bool, writer: SplitWriter,
                      resize: int | None = None) -> Classes:
    top = tree.top_prefix()
    paths = set(tree.paths)
    if top + "wnids.txt" not in paths:
        raise DataError(f"{what}: {tree.root} has no wnids.txt; it is not a Tiny-ImageNet-200 folder")
    wnids = tree.read(top + "wnids.txt").decode().split()
    index = {w: i for i, w in enumerate(wnids)}
    items = []
    if split == "train":
        for p in tree.paths:
            if p.startswith(top + "train/") and is_image(p):
                wnid = p[len(top + "train/"):].split("/", 1)[0]
                if wnid not in index:
                    raise DataError(f"{what}: {p} is in class {wnid!r}, which wnids.txt does not list")
                items.append((index[wnid], p))
    else:  # the official val set is the labelled test split
        ann_path = top + "val/val_annotations.txt"
        if ann_path not in paths:
            raise DataError(f"{what}: {tree.root} has no val/val_annotations.txt for the test split")
        wnid_of = {}
        for line in tree.read(ann_path).decode().splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                wnid_of[fields[0]] = fields[1]
        for p in tree.paths:
            if p.startswith(top + "val/images/") and is_image(p):
                wnid = wnid_of.get(p.rsplit("/", 1)[-1])
                if wnid not in index:
                    raise DataError(f"{what}: {p} has no label in val_annotations.txt that wnids.txt lists")
                items.append((index[wnid], p))
    if not items:
        raise DataError(f"{what}: {tree.root} has no {split} images")
    return _decode_files(tree, items, wnids, f"decoding {tree.root.name} {split}", progress, writer, resize)


def _tiny_source(data_dir: Path, download: bool, resize: int | None = None) -> Source:
    name = "tiny-imagenet"
    hint = "pass --data-dir to point at the folder that holds it, or --download to fetch it"
    try:
        path = _find(data_dir, "tiny-imagenet-200", name, hint)
    except DataError:
        if not download:
            raise
        _download(name, data_dir)  # the zip extracts to tiny-imagenet-200/
        path = _find(data_dir, "tiny-imagenet-200", name, hint)
    return Source(_keyed(name, resize), lambda split: [path],
                  lambda split, progress, writer: read_tiny_imagenet(_open_tree(path, name, progress), split, name,
                                                                     progress, writer, resize))


# ---------------------------------------------------------------------------------------------

def get_source(spec: DatasetSpec, data_dir: Path, download: bool = False) -> Source:
    if spec.name in _CIFAR:
        return _cifar_source(spec.name, data_dir, download)
    if spec.name == "cifar10-jpeg":
        hint = ("it has no public download: pass --data-dir to point at the folder that holds "
                "cifar10-jpeg.tar.gz (or RTL_DATA_DIR)")
        return _imagefolder_source("cifar10-jpeg", _find(data_dir, "cifar10-jpeg", "cifar10-jpeg", hint), spec.resize)
    if spec.name == "tiny-imagenet":
        return _tiny_source(data_dir, download, spec.resize)
    if spec.name == "imagefolder":
        path = Path(spec.path).expanduser()
        if not path.is_absolute() and not path.exists() and (data_dir / path).exists():
            path = data_dir / path  # a relative path may also name something inside the data dir
        if not path.exists():
            raise DataError(f"imagefolder: {path} does not exist (give a folder, or a .tar.gz/.tgz of one)")
        return _imagefolder_source("imagefolder", path.resolve(), spec.resize)
    raise DataError(f"no reader for dataset {spec.name!r}")  # parse_spec lets only known names through
