"""Encoded image bytes -> uint8 [3, H, W] images, one chunk at a time.

torchvision's libjpeg-turbo decoder (batched for JPEGs) is ~3x faster than PIL here, so it does
the bulk; PIL is the fallback for what torchvision cannot read (BMP, 16-bit PNG, odd modes).
Any size and mode goes in; with `resize=R` every image comes out R×R (short side scaled to R,
antialiased, then the centre R×R crop), otherwise all images must share one size. A file that
does not decode, or whose header claims more than MAX_PIXELS pixels (a decompression bomb: a
small PNG can claim gigabytes), is skipped and counted, never fatal on its own.
"""
from __future__ import annotations

import io
import warnings
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from ..errors import DataError

# Number of images decoded by this process (pickled CIFAR rows count too). Tests use it to prove
# that a second load is served from the cache.
DECODE_COUNT = 0
CHUNK = 512
MAX_PIXELS = 64 * 1024 * 1024  # 8192×8192: 192 MB decoded; PIL's own bomb limit is set to the same
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
_JPEG_MAGIC = b"\xff\xd8\xff"
BAD = "not a decodable image"
BOMB = f"more than {MAX_PIXELS >> 20}M pixels"


def _libc_trim():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


_TRIM = _libc_trim()


def return_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc's malloc_trim). Decoding allocates and frees
    hundreds of image-sized buffers per chunk; glibc keeps them in its arenas (its mmap threshold
    grows after the first frees), so without this RSS creeps up by gigabytes over a large folder."""
    if _TRIM is not None:
        _TRIM(0)


def count_decoded(n: int) -> None:
    global DECODE_COUNT
    DECODE_COUNT += n


def _pixels(blob: bytes) -> int | None:
    """Width × height from the header (nothing decoded), or None if PIL cannot even read the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(blob)) as im:
                w, h = im.size
        return w * h
    except Exception:  # PIL raises many types for bad files (and DecompressionBombError for huge ones)
        return None


def _decode_pil(blob: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(blob)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def _decode_one(blob: bytes) -> torch.Tensor | None:
    if not blob:
        return None
    try:
        x = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if x.dtype == torch.uint8 and x.dim() == 3 and x.shape[0] == 3 and x.shape[1] > 0 and x.shape[2] > 0:
            return x
    except (RuntimeError, ValueError):
        pass
    try:
        x = _decode_pil(blob)
        return x if x.shape[1] > 0 and x.shape[2] > 0 else None
    except Exception:  # PIL raises many types for bad files
        return None


def resize_short_side_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, h, w] -> [3, size, size]: short side scaled to `size` (bilinear, antialiased), centre
    crop; torchvision's Resize(size) + CenterCrop(size) on the decoded image."""
    h, w = x.shape[1:]
    if (h, w) != (size, size):
        # torchvision's Resize(size) rule: the short side becomes size, the long one int(size * long / short)
        nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        if (nh, nw) != (h, w):
            if size > 1:  # torch's CPU uint8 kernel (fast); float for the 1-pixel corner case
                x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
            else:
                x = F.interpolate(x[None].float(), size=(nh, nw), mode="bilinear", antialias=True)[0].round().to(torch.uint8)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))  # CenterCrop's offsets
        x = x[:, top:top + size, left:left + size]
    return x.contiguous()


def decode_chunk(blobs: list[bytes | None], resize: int | None = None) -> tuple[list[torch.Tensor | None], Counter]:
    """Each blob decoded to RGB uint8 [3, H, W] (R×R with `resize`), or None (counted by reason) if it cannot be."""
    why: Counter = Counter()
    ok = []
    for b in blobs:
        if b is None:
            ok.append(False)
            continue
        px = _pixels(b)
        if px is not None and px > MAX_PIXELS:
            why[BOMB] += 1
            ok.append(False)
        else:
            ok.append(True)
    out: list[torch.Tensor | None] = [None] * len(blobs)
    idx = [i for i, good in enumerate(ok) if good]
    if idx and all(blobs[i].startswith(_JPEG_MAGIC) for i in idx):
        try:  # one call for the chunk: cheaper per image than decode_image one by one
            for i, x in zip(idx, decode_jpeg([torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in idx],
                                             mode=ImageReadMode.RGB)):
                out[i] = x
            idx = []
        except RuntimeError:
            pass  # a bad or unusual JPEG in the chunk: decode one by one to find it
    for i in idx:
        out[i] = _decode_one(blobs[i])
        if out[i] is None:
            why[BAD] += 1
    if resize is not None:
        out = [None if x is None else resize_short_side_center_crop(x, resize) for x in out]
    count_decoded(sum(x is not None for x in out))
    return out, why


def check_one_size(images: list[torch.Tensor], names: list[str], first: tuple[str, tuple] | None) -> tuple[str, tuple]:
    """All images share the size of the first one seen (without resize); DataError naming the odd one out."""
    for img, name in zip(images, names):
        if first is None:
            first = (name, tuple(img.shape))
        elif tuple(img.shape) != first[1]:
            raise DataError(f"image {name} is {img.shape[1]}x{img.shape[2]} but {first[0]} is {first[1][1]}x{first[1][2]}; "
                            f"images of different sizes need a size: add :resize=R to the dataset "
                            f"(e.g. imagefolder:PATH:resize=224)")
    return first


def decode_images(blobs: list[bytes], names: list[str], *, desc: str = "decoding", progress: bool = True,
                  resize: int | None = None) -> torch.Tensor:
    """All `blobs` decoded into one tensor (in memory; for small sets and tests). DataError if any is bad."""
    if not blobs:
        raise DataError(f"{desc}: no images found")
    out, first = [], None
    for start in range(0, len(blobs), CHUNK):
        imgs, _ = decode_chunk(blobs[start:start + CHUNK], resize)
        for img, name in zip(imgs, names[start:start + CHUNK]):
            if img is None:
                raise DataError(f"cannot decode image {name}")
        first = check_one_size(imgs, names[start:start + CHUNK], first)
        out += imgs
    return torch.stack(out)
