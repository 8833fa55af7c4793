"""Dataset specs: `name[:selector]`, e.g. `cifar10`, `tiny-imagenet`, `imagefolder:/data/pets.tar.gz:half-b`.

Selectors: `half-a` / `half-b` (seeded disjoint halves of the classes) and `classes=0-4` or
`classes=0,2,5-7` (original class indices).
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


@dataclass(frozen=True)
class DatasetSpec:
    name: str                     # one of _FIXED_NAMES or "imagefolder"
    path: str | None = None       # imagefolder only: a folder or a .tar.gz/.tgz of one
    selection: str | None = None  # "half-a", "half-b", "classes=..." or None (all classes)

    def __str__(self) -> str:
        text = f"imagefolder:{self.path}" if self.name == "imagefolder" else self.name
        return f"{text}:{self.selection}" if self.selection else text


def _is_selector(text: str) -> bool:
    return text in ("half-a", "half-b") or text.startswith("classes=")


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
    text, selection = spec.strip(), None
    # The selector is the last ':'-suffix, but only if it looks like one (paths may contain ':').
    head, sep, last = text.rpartition(":")
    if sep and _is_selector(last.strip()):
        text, selection = head, last.strip().replace(" ", "")
        if selection.startswith("classes="):
            parse_class_list(selection)  # validate now, so a typo fails before any data is read
    name, sep, rest = text.partition(":")
    if name == "imagefolder":
        if not rest.strip():
            raise ConfigError(f"dataset={spec!r} needs a path: imagefolder:PATH (a folder or a .tar.gz of one)")
        return DatasetSpec("imagefolder", rest.strip(), selection)
    if name not in _FIXED_NAMES:
        raise one_of("dataset", spec, DATASET_NAMES)
    if sep:
        raise ConfigError(f"dataset={spec!r} has an unknown selector {rest!r}; allowed: {', '.join(SELECTORS)}")
    return DatasetSpec(name, None, selection)
