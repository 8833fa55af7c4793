"""Datasets as in-memory uint8 tensors: sources, decode-once cache, class splits, subsets, loader.

    data = load_dataset("cifar10-jpeg:half-a", "train")
    small = stratified_subset(data, per_class=100, seed=0)
    for x, y in BatchLoader(small, 128, augment=True, device="cuda"): ...

The names below load with their modules on first use (module `__getattr__`), not when the package is
imported: configs import `data.spec` to check a dataset spec, and that must not load torch (`rtl --help`
stays light; tests/test_cli.py holds it).
"""
from __future__ import annotations

__all__ = ["ImageData", "load_dataset", "parse_spec", "DatasetSpec", "stratified_subset", "resize_images",
           "BatchLoader", "default_data_dir", "cache_dir", "DATASET_NAMES", "SPLITS", "class_halves"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import imagedata, load, loader, paths, spec, subsets, transforms

    for module in (imagedata, load, loader, paths, spec, subsets, transforms):
        if name in vars(module):
            return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
