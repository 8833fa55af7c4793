"""Class selection (`half-a`, `half-b`, `classes=...`) and N-per-class stratified subsets."""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, DataError
from .imagedata import ImageData
from .spec import parse_class_list

HALVES_SEED = 0  # fixed: every run, machine and process must agree on which classes form each half


def class_halves(num_classes: int) -> tuple[list[int], list[int]]:
    """Disjoint halves of range(num_classes) from a fixed seeded permutation, each sorted:
    half-a gets the first ceil(K/2) permuted indices, half-b the rest."""
    perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(HALVES_SEED)).tolist()
    cut = math.ceil(num_classes / 2)
    return sorted(perm[:cut]), sorted(perm[cut:])


def selected_classes(selection: str | None, num_classes: int) -> list[int] | None:
    """Original class indices kept by a selector, ascending; None means all classes."""
    if selection is None:
        return None
    if selection in ("half-a", "half-b"):
        a, b = class_halves(num_classes)
        return a if selection == "half-a" else b
    indices = list(parse_class_list(selection))
    if indices[-1] >= num_classes:
        raise ConfigError(f"class selector {selection!r} names class {indices[-1]}, but the dataset has "
                          f"{num_classes} classes; allowed: 0-{num_classes - 1}")
    return indices


def select_classes(images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
                   keep: list[int]) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Only the examples of classes `keep`, relabelled 0..len(keep)-1 in the order of `keep`."""
    new_label = torch.full((len(classes),), -1, dtype=torch.int64)
    new_label[torch.tensor(keep, dtype=torch.int64)] = torch.arange(len(keep))
    mapped = new_label[labels]
    mask = mapped >= 0
    return images[mask].contiguous(), mapped[mask], tuple(classes[i] for i in keep)


def stratified_subset(data: ImageData, per_class: int, seed: int = 0) -> ImageData:
    """Exactly `per_class` examples of every class, chosen by a seeded shuffle, in dataset order.

    The choice for a smaller per_class is a prefix of the choice for a larger one (same seed), so
    low-data runs are nested.
    """
    return data.subset(stratified_indices(data, per_class, seed))


def stratified_indices(data: ImageData, per_class: int, seed: int = 0) -> torch.Tensor:
    """The sorted positions in `data` that `stratified_subset` keeps."""
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise ConfigError(f"per_class={per_class!r} must be a whole number >= 1")
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    smallest = int(counts.min())
    if per_class > smallest:
        name = data.classes[int(counts.argmin())]
        allowed = f"1..{smallest}" if smallest else "none, drop that class first"
        raise DataError(f"per_class={per_class} is more than {data.spec} {data.split} has: its smallest class "
                        f"{name!r} has {smallest} examples; allowed: {allowed}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    # group the shuffled indices by class (stable, so each group stays in shuffled order) ...
    by_class = perm[torch.sort(data.labels[perm], stable=True).indices]
    # ... and take the first per_class of each group
    starts = torch.cumsum(counts, 0) - counts
    take = (starts[:, None] + torch.arange(per_class)[None, :]).flatten()
    return torch.sort(by_class[take]).values
