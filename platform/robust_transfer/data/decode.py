"""Encoded image bytes -> one uint8 [N, 3, H, W] tensor.

torchvision's libjpeg-turbo decoder (batched for JPEGs) is ~3x faster than PIL here, so it does
the bulk; PIL is the fallback for what torchvision cannot read (BMP, 16-bit PNG, odd modes).
"""
from __future__ import annotations

import io
import struct
import warnings

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
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Decoded pixels per image, checked from the file's header before decoding (issue 17 §2: a 186 KB PNG decodes
# to 192 MB). 25 megapixels (75 MB as RGB) is above any camera photo in common datasets; PIL's own
# decompression-bomb limit is set to the same number, so the PIL fallback refuses what the header check would.
MAX_IMAGE_PIXELS = 25_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, walking the segments (no decoding)."""
    i, n = 2, len(blob)
    while i + 4 <= n:
        if blob[i] != 0xFF:
            return None
        m = blob[i + 1]
        if m == 0xFF:          # fill byte
            i += 1
            continue
        if 0xD0 <= m <= 0xD9 or m == 0x01:
            i += 2
            continue
        if m in _SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", blob[i + 5:i + 9])
            return w, h
        i += 2 + struct.unpack(">H", blob[i + 2:i + 4])[0]
    return None


def image_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) from the header: PNG and JPEG parsed directly, anything else by PIL's lazy open."""
    if blob.startswith(_PNG_MAGIC) and len(blob) >= 24:
        return struct.unpack(">II", blob[16:24])
    if blob.startswith(_JPEG_MAGIC):
        return _jpeg_size(blob)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as im:
                return im.size
    except Image.DecompressionBombError:
        return (MAX_IMAGE_PIXELS + 1, 1)
    except Exception:  # not an image PIL knows: the decoder names the problem
        return None


def check_pixels(blob: bytes, name: str) -> None:
    """DataError (one line, the bound in it) for an image that would decode to more than MAX_IMAGE_PIXELS."""
    size = image_size(blob)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DataError(f"image {name} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels; at most "
                        f"{MAX_IMAGE_PIXELS} pixels per image are decoded (a decompression bomb, or resize it first)")


def count_decoded(n: int) -> None:
    global DECODE_COUNT
    DECODE_COUNT += n


def _decode_pil(blob: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(blob)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def _decode_one(blob: bytes, name: str) -> torch.Tensor:
    check_pixels(blob, name)
    try:
        x = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if x.dtype == torch.uint8 and x.shape[0] == 3:
            return x
    except RuntimeError:
        pass
    try:
        return _decode_pil(blob)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {name} decodes to more than {MAX_IMAGE_PIXELS} pixels (the per-image limit)") from None
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {name}: {e}") from None


def _decode_chunk(blobs: list[bytes], names: list[str]) -> list[torch.Tensor]:
    if all(b.startswith(_JPEG_MAGIC) for b in blobs):
        for b, n in zip(blobs, names):
            check_pixels(b, n)
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
