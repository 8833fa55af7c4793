"""Dataset specs: `name[:selector]`, e.g. `cifar10`, `tiny-imagenet`, `imagefolder:/data/pets.tar.gz:half-b`.

Selectors: `half-a` / `half-b` (seeded disjoint halves of the classes) and `classes=0-4` or
`classes=0,2,5-7` (original class indices). Image-file datasets (imagefolder, cifar10-jpeg,
tiny-imagenet) also take `resize=R`: every image is decoded to R×R (short side to R, centre crop),
so folders of mixed sizes load, e.g. `imagefolder:/data/pets:resize=224:half-a` (options in any order).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError, one_of

DATASET_NAMES = ("cifar10", "cifar100", "cifar10-jpeg", "tiny-imagenet", "imagefolder:PATH")
SELECTORS = ("half-a", "half-b", "classes=0-4", "classes=0,2,5-7")
_FIXED_NAMES = ("cifar10", "cifar100", "cifar10-jpeg", "tiny-imagenet")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_CLASS_INDEX = 99_999   # a model has at most 100,000 classes (models.create_model): bounds ranges before they expand
_RESIZE = re.compile(r"^resize=(\d{1,5})$")
RESIZE_RANGE = (8, 1024)
_IMAGE_FILE_NAMES = ("cifar10-jpeg", "tiny-imagenet", "imagefolder")
_OPTION_LIKE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=")   # a trailing `:name=value` is an option, never a path


@dataclass(frozen=True)
class DatasetSpec:
    name: str                     # one of _FIXED_NAMES or "imagefolder"
    path: str | None = None       # imagefolder only: a folder or a .tar.gz/.tgz of one
    selection: str | None = None  # "half-a", "half-b", "classes=..." or None (all classes)
    resize: int | None = None     # image-file datasets: decode every image to resize×resize

    def __str__(self) -> str:
        text = f"imagefolder:{self.path}" if self.name == "imagefolder" else self.name
        if self.resize:
            text += f":resize={self.resize}"
        return f"{text}:{self.selection}" if self.selection else text


def _is_selector(text: str) -> bool:
    return text in ("half-a", "half-b") or text.startswith("classes=")


def _is_option(text: str) -> bool:
    return _is_selector(text) or text.startswith("resize=")


def parse_class_list(selection: str) -> tuple[int, ...]:
    """`classes=0,2,5-7` -> (0, 2, 5, 6, 7): sorted, no duplicates."""
    body = selection[len("classes="):]
    out: list[int] = []
    for token in body.split(","):
        m = _RANGE.match(token.strip())
        if not m:
            raise ConfigError(f"class selector {selection!r} is malformed at {token.strip()!r}; "
                              f"allowed: comma-separated indices or ranges, e.g. classes=0-4 or classes=0,2,5-7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"class selector {selection!r} has an empty range {token.strip()!r}; write low-high")
        if hi > MAX_CLASS_INDEX:
            raise ConfigError(f"class selector {selection[:80]!r} names class {hi}; class indices go up to "
                              f"{MAX_CLASS_INDEX} at most")
        if len(out) + hi - lo + 1 > MAX_CLASS_INDEX + 1:
            raise ConfigError(f"class selector {selection[:80]!r} names more than {MAX_CLASS_INDEX + 1} classes")
        out.extend(range(lo, hi + 1))
    if len(set(out)) != len(out):
        raise ConfigError(f"class selector {selection!r} names a class twice; list each class once")
    return tuple(sorted(out))


def parse_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Parse a dataset spec string; ConfigError (listing what is allowed) if it is not one."""
    if isinstance(spec, DatasetSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise one_of("dataset", spec, DATASET_NAMES)
    text, selection, resize = spec.strip(), None, None
    # Options are the trailing ':'-suffixes that look like one (paths may contain ':'), in any order.
    while True:
        head, sep, last = text.rpartition(":")
        last = last.strip().replace(" ", "")
        if not sep or not _is_option(last):
            break
        if last.startswith("resize="):
            m = _RESIZE.match(last)
            if resize is not None or not m or not RESIZE_RANGE[0] <= int(m.group(1)) <= RESIZE_RANGE[1]:
                raise ConfigError(f"dataset={spec!r}: {last!r} is not allowed; give resize=R once, R a whole number "
                                  f"in [{RESIZE_RANGE[0]}, {RESIZE_RANGE[1]}]")
            resize = int(m.group(1))
        else:
            if selection is not None:
                raise ConfigError(f"dataset={spec!r} has two class selectors ({last!r} and {selection!r}); give one")
            selection = last
            if selection.startswith("classes="):
                parse_class_list(selection)  # validate now, so a typo fails before any data is read
        text = head
    name, sep, rest = text.partition(":")
    option = _OPTION_LIKE.match(last)
    if name == "imagefolder" and head != "imagefolder" and option:
        # `imagefolder:/d:evil=1`: an option we do not know, not a path that "does not exist"
        raise ConfigError(f"dataset={spec!r}: unknown option {option.group(1)!r}; allowed: resize=R, "
                          f"{', '.join(SELECTORS)}")
    if resize is not None and name not in _IMAGE_FILE_NAMES:
        raise ConfigError(f"dataset={spec!r}: resize=R is for datasets of image files ({', '.join(_IMAGE_FILE_NAMES)}); "
                          f"{name} is 32x32 already: resize it for a model with the model's upsample=true")
    if name == "imagefolder":
        if not rest.strip():
            raise ConfigError(f"dataset={spec!r} needs a path: imagefolder:PATH (a folder or a .tar.gz of one)")
        return DatasetSpec("imagefolder", rest.strip(), selection, resize)
    if name not in _FIXED_NAMES:
        raise one_of("dataset", spec, DATASET_NAMES)
    if sep:
        raise ConfigError(f"dataset={spec!r} has an unknown selector {rest!r}; allowed: {', '.join(SELECTORS)}, resize=R")
    return DatasetSpec(name, None, selection, resize)
