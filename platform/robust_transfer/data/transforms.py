"""Tensor-level image transforms: resizing and the batched pad-crop-flip augmentation."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import check_range
from .imagedata import ImageData

_RESIZE_CHUNK = 1024  # images per float32 chunk: 1024 x 3 x 224 x 224 floats is ~600 MB


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 [N, 3, H, W] to [N, 3, size, size], uint8 out.

    On the CPU torch's native uint8 kernel is ~7x faster than going through float (2 s instead
    of 17 s for Tiny-ImageNet's 100k images); other devices have no uint8 kernel, so they
    resample in float32 and round, in chunks so a big set never needs a full float copy. The two
    paths agree to within 1/255.
    """
    if x.shape[-2:] == (size, size):
        return x
    if x.device.type == "cpu" and size > 1:  # (torch 2.14's uint8 kernel asserts on 1x1 outputs)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _resize_via_float(x, size)


def _resize_via_float(x: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.empty(x.shape[:2] + (size, size), dtype=torch.uint8, device=x.device)
    for i in range(0, len(x), _RESIZE_CHUNK):
        y = F.interpolate(x[i:i + _RESIZE_CHUNK].float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out[i:i + _RESIZE_CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


ON_DISK_BYTES = 512 << 20  # resized sets larger than this are written to the decode cache and memory-mapped


def resize_images(data: ImageData, size: int) -> ImageData:
    """`data` with every image resized to size x size (e.g. Tiny-ImageNet 64 -> 32, CIFAR 32 -> 224).

    A result over ON_DISK_BYTES (CIFAR-10's 50,000 training images at 224 are 7.5 GB) is built chunk
    by chunk into the decode cache (keyed by the data's sha256 and the size) and memory-mapped, so
    `upsample=true` on a whole CIFAR split needs disk, not memory."""
    check_range("size", size, 1, 4096)
    if data.images.shape[-2:] == (size, size):
        return data
    if len(data) * 3 * size * size < ON_DISK_BYTES or data.images.device.type != "cpu":
        return ImageData(resize_uint8(data.images, size), data.labels, data.classes, data.spec, data.split)
    from .cache import load_or_build, release

    def build(writer) -> tuple:
        for i in range(0, len(data), _RESIZE_CHUNK):
            writer.add(resize_uint8(data.images[i:i + _RESIZE_CHUNK], size), data.labels[i:i + _RESIZE_CHUNK])
            release(data.images)
        return data.classes

    resized = load_or_build(f"resized{size}-{data.sha256()[:24]}", data.split, [], build, what=f"{data.spec} at {size}")
    out = ImageData(resized.images, resized.labels, data.classes, data.spec, data.split)
    object.__setattr__(out, "_sha256", resized.sha256)
    return out


def crop_windows(padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image windows padded[b, :, top[b]:top[b]+height, left[b]:left[b]+width], each mirrored
    left-right where flip[b], gathered in one indexing op (no loop over images)."""
    rows = top[:, None] + torch.arange(height, device=padded.device)     # [B, height]
    cols = torch.arange(width, device=padded.device).expand(len(left), width)
    if flip is not None:
        cols = torch.where(flip[:, None], width - 1 - cols, cols)          # mirror inside the window
    cols = left[:, None] + cols                                            # [B, width]
    b = torch.arange(len(padded), device=padded.device)[:, None, None, None]
    c = torch.arange(padded.shape[1], device=padded.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding=pad) (zero padding) + RandomHorizontalFlip, batched.

    Random numbers come from `generator` (on the CPU) so the same seed gives the same
    augmentation on every device.
    """
    n, _, h, w = x.shape
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return crop_windows(F.pad(x, (pad, pad, pad, pad)), top, left, h, w, flip)


_RRC_CHUNK = 32


def random_resized_crop_flip(x: torch.Tensor, generator: torch.Generator, scale=(0.08, 1.0),
                             ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip on a batch, at the
    batch's own size: per image a box of `scale` × the area and aspect `ratio`, resampled (bilinear)
    back to H×W, mirrored with probability 1/2. One affine grid_sample for the whole batch; boxes
    that would not fit are shrunk to fit (torchvision retries, then falls back to the centre crop).
    Random numbers come from `generator` (CPU), so every device augments alike."""
    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    bw = torch.sqrt(area * aspect).clamp(max=1.0)       # box width / image width
    bh = torch.sqrt(area / aspect).clamp(max=1.0)       # box height / image height
    cx = (torch.rand(n, generator=generator) * (1 - bw) + bw / 2) * 2 - 1   # box centre in [-1, 1]
    cy = (torch.rand(n, generator=generator) * (1 - bh) + bh / 2) * 2 - 1
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = bw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = bh, cy
    theta = theta.to(x.device)
    out = torch.empty_like(x)
    for i in range(0, n, _RRC_CHUNK):  # in chunks: the float copies and the grid stay small at 224×224
        sl = slice(i, i + _RRC_CHUNK)
        grid = F.affine_grid(theta[sl], [len(theta[sl]), x.shape[1], h, w], align_corners=False)
        y = F.grid_sample(x[sl].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[sl] = y.round_().clamp_(0, 255) if x.dtype == torch.uint8 else y
    return out


def augmentation_for(spec: str):
    """The training augmentation of a dataset: random-resized-crop + flip for image folders decoded
    at a chosen size (`resize=R`: photos, where a 4-pixel shift means little), else the CIFAR-style
    pad-crop-flip."""
    from .spec import parse_spec

    try:
        resized = parse_spec(spec).resize is not None
    except Exception:  # a spec from an older checkpoint or a test's hand-made ImageData
        resized = False
    return random_resized_crop_flip if resized else random_crop_flip
