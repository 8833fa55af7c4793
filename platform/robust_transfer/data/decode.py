"""Encoded image bytes -> one uint8 [N, 3, H, W] tensor.

torchvision's libjpeg-turbo decoder (batched for JPEGs) is ~3x faster than PIL here, so it does
the bulk; PIL is the fallback for what torchvision cannot read (BMP, 16-bit PNG, odd modes).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from tqdm import tqdm

from ..errors import DataError

# Number of images decoded by this process (pickled CIFAR rows count too). Tests use it to prove
# that a second load is served from the cache.
DECODE_COUNT = 0
_CHUNK = 512
_JPEG_MAGIC = b"\xff\xd8\xff"


def count_decoded(n: int) -> None:
    global DECODE_COUNT
    DECODE_COUNT += n


def _decode_pil(blob: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(blob)) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def _decode_one(blob: bytes, name: str) -> torch.Tensor:
    try:
        x = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if x.dtype == torch.uint8 and x.shape[0] == 3:
            return x
    except RuntimeError:
        pass
    try:
        return _decode_pil(blob)
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {name}: {e}") from None


def _decode_chunk(blobs: list[bytes], names: list[str]) -> list[torch.Tensor]:
    if all(b.startswith(_JPEG_MAGIC) for b in blobs):
        try:  # one call for the chunk: cheaper per image than decode_image one by one
            return decode_jpeg([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs],
                               mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # a bad or unusual JPEG in the chunk: decode one by one to name it
    return [_decode_one(b, n) for b, n in zip(blobs, names)]


def decode_images(blobs: list[bytes], names: list[str], *, desc: str = "decoding",
                  progress: bool = True) -> torch.Tensor:
    """Decode all `blobs` (named by `names` in errors) to RGB; all images must share one size."""
    n = len(blobs)
    if n == 0:
        raise DataError(f"{desc}: no images found")
    out: torch.Tensor | None = None
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, _CHUNK):
            imgs = _decode_chunk(blobs[start:start + _CHUNK], names[start:start + _CHUNK])
            if out is None:
                out = torch.empty((n, 3) + tuple(imgs[0].shape[1:]), dtype=torch.uint8)
            for i, img in enumerate(imgs):
                if img.shape != out.shape[1:]:
                    h, w = out.shape[2:]
                    raise DataError(f"image {names[start + i]} is {img.shape[1]}x{img.shape[2]} but {names[0]} "
                                    f"is {h}x{w}; all images of a dataset must have one size (resize them first)")
            torch.stack(imgs, out=out[start:start + len(imgs)])  # one copy per chunk, not per image
            count_decoded(len(imgs))
            bar.update(len(imgs))
    return out
