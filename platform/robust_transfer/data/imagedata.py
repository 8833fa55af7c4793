"""`ImageData`: a whole dataset split as one uint8 image tensor plus labels and class names."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors elementwise is not a dataclass `==`
class ImageData:
    images: torch.Tensor        # uint8 [N, 3, H, W], contiguous
    labels: torch.Tensor        # int64 [N], values 0..len(classes)-1
    classes: tuple[str, ...]    # class names, index = label
    spec: str                   # the dataset spec it came from, e.g. "cifar10-jpeg:half-a"
    split: str                  # "train" or "test"
    _sha256: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {x.dtype} {list(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"labels must be int64 [{x.shape[0]}], got {y.dtype} {list(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise ValueError(f"labels must lie in 0..{len(self.classes) - 1}")
        if not x.is_contiguous():
            object.__setattr__(self, "images", x.contiguous())
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    def sha256(self) -> str:
        """Hex content hash of the images (with their shape) and labels; computed once."""
        if self._sha256 is None:
            h = hashlib.sha256(repr(tuple(self.images.shape)).encode())
            h.update(self.images.cpu().contiguous().numpy().data)
            h.update(self.labels.cpu().contiguous().numpy().data)
            object.__setattr__(self, "_sha256", h.hexdigest())
        return self._sha256

    def subset(self, indices: torch.Tensor) -> "ImageData":
        """The examples at `indices` (an index or boolean-mask tensor), same classes and labels."""
        indices = torch.as_tensor(indices)
        return ImageData(self.images[indices], self.labels[indices], self.classes, self.spec, self.split)

    def __repr__(self) -> str:
        return (f"ImageData(spec={self.spec!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, size={tuple(self.images.shape[1:])})")
