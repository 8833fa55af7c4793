"""`load_dataset(spec, split)`: spec -> source -> decode-once cache -> class selection -> ImageData."""
from __future__ import annotations

import os
import sys

from ..errors import one_of
from . import cache
from .imagedata import ImageData
from .paths import resolve_data_dir
from .sources import get_source
from .spec import DatasetSpec, parse_spec
from .subsets import select_classes, selected_classes
from .tree import describe_skipped

SPLITS = ("train", "test")


def load_dataset(spec: str | DatasetSpec, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 download: bool = False, progress: bool = True) -> ImageData:
    """Load one split of a dataset spec (e.g. "cifar10-jpeg:half-a") as uint8 tensors.

    Reads from `data_dir` (else RTL_DATA_DIR, else the defaults of `default_data_dir`); the first
    load decodes and caches the full split, later loads read the cache.
    """
    if split not in SPLITS:
        raise one_of("split", split, SPLITS)
    parsed = parse_spec(spec)
    source = get_source(parsed, resolve_data_dir(data_dir), download)
    decoded = cache.load_or_build(source.name, split, source.files(split),
                                  lambda writer: source.read(split, progress, writer), what=str(parsed))
    if decoded.skipped:
        print(describe_skipped(decoded.skipped, f"{parsed} {split}"), file=sys.stderr)
    images, labels, classes = decoded
    keep = selected_classes(parsed.selection, len(classes))
    if keep is not None:
        images, labels, classes = select_classes(images, labels, classes, keep)
    data = ImageData(images, labels, classes, str(parsed), split)
    if keep is None and decoded.sha256 is not None:
        object.__setattr__(data, "_sha256", decoded.sha256)  # computed once, when the cache was built
    return data
