"""Datasets as in-memory uint8 tensors: sources, decode-once cache, class splits, subsets, loader.

    data = load_dataset("cifar10-jpeg:half-a", "train")
    small = stratified_subset(data, per_class=100, seed=0)
    for x, y in BatchLoader(small, 128, augment=True, device="cuda"): ...
"""
from .imagedata import ImageData
from .load import SPLITS, load_dataset
from .loader import BatchLoader
from .paths import cache_dir, default_data_dir
from .spec import DATASET_NAMES, DatasetSpec, parse_spec
from .subsets import class_halves, stratified_subset
from .transforms import resize_images

__all__ = ["ImageData", "load_dataset", "parse_spec", "DatasetSpec", "stratified_subset", "resize_images",
           "BatchLoader", "default_data_dir", "cache_dir", "DATASET_NAMES", "SPLITS", "class_halves"]
