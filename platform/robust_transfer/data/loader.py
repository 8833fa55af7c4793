"""`BatchLoader`: batches from an in-memory ImageData, all tensor ops, no worker processes.

The uint8 images are moved to the device once and each batch is converted to float there, which
is cheap and keeps memory at a quarter of a float copy. Every epoch's shuffle and augmentation
come from a CPU generator seeded by (seed, epoch), so a resumed run (`set_epoch`) replays the
same batches, on any device.
"""
from __future__ import annotations

import hashlib
import math

import torch

from ..errors import check_range
from .imagedata import ImageData
from .transforms import random_crop_flip, resize_uint8


def _epoch_seed(seed: int, epoch: int) -> int:
    # hash rather than seed + epoch, so (seed=0, epoch=1) and (seed=1, epoch=0) differ
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:8], "little") >> 1


class BatchLoader:
    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = True, augment: bool = False,
                 seed: int = 0, device: str | torch.device = "cpu", drop_last: bool = False,
                 resize: int | None = None):
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
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.epoch = 0  # the epoch the next __iter__ yields

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
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x, g)
            if self.resize is not None:
                x = resize_uint8(x, self.resize)  # as resize_images does to a whole set
            yield x.float().div_(255), self.labels[idx]
