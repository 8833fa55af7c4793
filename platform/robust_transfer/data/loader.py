"""`BatchLoader`: the one batcher — batches from an in-memory ImageData, all tensor ops, no worker processes.

Two forms over the same epochs:
- `for x, y in loader`: pixel batches (the public API, benchmarks, tests);
- `loader.epoch(e)` → batches of indices, and `loader.pixels(idx)`: what the training engine uses, so
  per-example data kept beside the images (stored features z, the teacher's z0) is looked up with the
  same batch (`loader.labels[idx]` on the device).

**Seeds.** Every epoch's order and augmentation come from ONE CPU generator seeded by
`epoch_seed(seed, epoch)`: the order is drawn first (`order`, the one place an epoch's order is made —
a DistributedDataParallel rank takes its shard of it there), then each batch's pad-crop-flip as its
pixels are asked for, in batch order. So a resumed run replays the same batches, on any device.

**The last batch** (`batch_count`): a shuffled (training) epoch with at least two full batches drops
its ragged last batch — the next epoch's order puts those examples elsewhere, and a small batch would
give its few examples a whole step's weight; with fewer than two full batches (tiny data) it keeps every
example, merging a last batch of ONE example into the one before (BatchNorm cannot train on one). An
unshuffled pass (`shuffle=False`: evaluation, feature extraction) serves every example once, in order.

**Where the images live.** On the CPU they are used where they are. On CUDA (issue 26) they stream by
default: the uint8 set stays in pinned host memory and each batch is gathered there and copied to the card
asynchronously (non_blocking), then augmented and converted to float on the card — an image folder at
224 px never has to fit on the device whole. `on_device=True` moves the whole uint8 set to the card once
instead (a quarter of a float copy; what a small set that fits can afford). `memory_format` (channels_last
for the conv nets) is applied in the same copy that converts to float.
"""
from __future__ import annotations

import hashlib
import math

import torch

from ..errors import check_range
from .cache import ReleasingReader
from .imagedata import ImageData
from .transforms import augmentation_for, resize_uint8


def epoch_seed(seed: int, epoch: int, stream: str = "") -> int:
    """The one seed derivation for an epoch's randomness: 63 bits of sha256("seed:epoch[:stream]").

    A hash rather than seed + epoch, so (seed 0, epoch 1) and (seed 1, epoch 0) differ; `stream` names
    another independent stream of the same epoch (the training engine's "attack": the random starts of
    the attacks a training step makes)."""
    key = f"{seed}:{epoch}" + (f":{stream}" if stream else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def batch_count(n: int, batch_size: int, shuffle: bool = True) -> int:
    """Batches per epoch under the last-batch rule (module docstring)."""
    if not shuffle:
        return math.ceil(n / batch_size)
    if n >= 2 * batch_size:
        return n // batch_size
    return math.ceil(n / batch_size) - (1 if n % batch_size == 1 and n > 1 else 0)


class BatchLoader:
    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = True, augment: bool = False,
                 seed: int = 0, device: str | torch.device = "cpu", resize: int | None = None,
                 on_device: bool | None = None, memory_format: torch.memory_format = torch.contiguous_format):
        check_range("batch_size", batch_size, 1)
        if resize is not None:
            check_range("resize", resize, 1, 4096)
        if isinstance(device, str) and device == "auto":
            from ..device import resolve_device
            device = resolve_device("auto")
        self.data, self.batch_size = data, batch_size
        self.shuffle, self.augment, self.seed, self.resize = shuffle, augment, seed, resize
        self.device = torch.device(device)
        self.memory_format = memory_format
        # where the uint8 set lives: pinned host memory for a CUDA device unless on_device=True (batches
        # then copied with non_blocking=True), else the device itself (the CPU)
        streamed = self.device.type == "cuda" and not on_device
        self.home = torch.device("cpu") if streamed else self.device
        self.images = data.images.to(self.home)
        if self.home.type == "cpu" and self.device.type == "cuda":
            self.images = self.images.pin_memory()
        self.labels = data.labels.to(self.device)   # small: on the device, where batches look them up
        self.n = len(data)
        self.next_epoch = 0  # the epoch the next `for x, y in loader` yields
        self.generator = torch.Generator()   # CPU: the same draws on every device
        self.augment_fn = augmentation_for(data.spec)
        self._pages = ReleasingReader(self.images)  # a memory-mapped split: keep RSS bounded

    def __len__(self) -> int:
        return batch_count(self.n, self.batch_size, self.shuffle)

    def set_epoch(self, epoch: int) -> None:
        self.next_epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """Epoch `epoch`'s order of the examples (on the device): a seeded permutation, or 0..n-1 unshuffled.
        Seeds the generator that `pixels` then augments with."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return order.to(self.device)

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        """Epoch `epoch` as batches of indices, under the last-batch rule (module docstring)."""
        order, k, size = self.order(epoch), len(self), self.batch_size
        batches = [order[i * size:(i + 1) * size] for i in range(k)]
        if k and k * size < self.n and self.n < 2 * size:   # a last batch of one, merged into the one before
            batches[-1] = order[(k - 1) * size:]
        return batches

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at `idx` as float pixels in [0,1] on the device (augmented when asked: draws from the
        epoch's generator, so ask for each batch once, in order)."""
        x = self.images[idx.to(self.home)]
        self._pages.touched(x.numel())
        if self.home != self.device:   # pinned host batch → device, asynchronously
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self.augment:
            x = self.augment_fn(x, self.generator)
        if self.resize is not None:
            x = resize_uint8(x, self.resize)  # as resize_images does to a whole set
        return x.to(dtype=torch.float32, memory_format=self.memory_format).div_(255)

    def __iter__(self):
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1  # counted when iteration starts, not ends
        return self._batches(epoch)

    def _batches(self, epoch: int):
        for idx in self.epoch(epoch):
            yield self.pixels(idx), self.labels[idx]
