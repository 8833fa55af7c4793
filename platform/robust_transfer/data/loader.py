"""`BatchLoader`: batches from an in-memory ImageData, all tensor ops, no worker processes.

The uint8 images are moved to the device once and each batch is augmented (pad-crop-flip) and
converted to float there, which is cheap and keeps memory at a quarter of a float copy; with
`on_device=False` and a CUDA device (a set too big for the card) they stay in pinned host memory
and each batch is copied asynchronously. `memory_format` (channels_last for the conv nets) is
applied in the same copy that converts to float. Every epoch's shuffle and augmentation
come from a CPU generator seeded by (seed, epoch), so a resumed run (`set_epoch`) replays the
same batches, on any device.
"""
from __future__ import annotations

import hashlib
import math

import torch

from ..errors import check_range
from .imagedata import ImageData
from .cache import ReleasingReader
from .transforms import augmentation_for, resize_uint8


def _epoch_seed(seed: int, epoch: int) -> int:
    # hash rather than seed + epoch, so (seed=0, epoch=1) and (seed=1, epoch=0) differ
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:8], "little") >> 1


class BatchLoader:
    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = True, augment: bool = False,
                 seed: int = 0, device: str | torch.device = "cpu", drop_last: bool = False,
                 resize: int | None = None, on_device: bool = True,
                 memory_format: torch.memory_format = torch.contiguous_format):
        check_range("batch_size", batch_size, 1)
        if resize is not None:
            check_range("resize", resize, 1, 4096)
        if isinstance(device, str) and device == "auto":
            from ..device import resolve_device
            device = resolve_device("auto")
        self.data, self.batch_size = data, batch_size
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.drop_last, self.resize = drop_last, resize
        self.device = torch.device(device)
        self.memory_format = memory_format
        # where the uint8 set lives: the device (default), or pinned host memory when a CUDA device
        # should not hold it (on_device=False); batches are then copied with non_blocking=True
        self.home = self.device if on_device or self.device.type != "cuda" else torch.device("cpu")
        self.images = data.images.to(self.home)
        self.labels = data.labels.to(self.home)
        if self.home.type == "cpu" and self.device.type == "cuda":
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()
        self.epoch = 0  # the epoch the next __iter__ yields
        self.augment_fn = augmentation_for(data.spec)
        self._pages = ReleasingReader(self.images)  # a memory-mapped split: keep RSS bounded

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1  # counted when iteration starts, not ends
        return self._batches(epoch)

    def _batches(self, epoch: int):
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        n = len(self.data)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.home)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            self._pages.touched(x.numel())
            if self.home != self.device:   # pinned host batch → device, asynchronously
                x = x.pin_memory().to(self.device, non_blocking=True)
                y = y.pin_memory().to(self.device, non_blocking=True)
            if self.augment:
                x = self.augment_fn(x, g)
            if self.resize is not None:
                x = resize_uint8(x, self.resize)  # as resize_images does to a whole set
            yield x.to(dtype=torch.float32, memory_format=self.memory_format).div_(255), y
