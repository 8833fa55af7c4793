"""Encoded image bytes -> uint8 [3, H, W] images, one group at a time.

Every file passes ONE gate before any decoder sees its bytes: its size is read from its header (our
own reader for JPEG and PNG, which follows the markers the way libjpeg does; PIL's header reader for the
rest), and a file that claims more than MAX_PIXELS pixels (a decompression bomb: 333 bytes can claim
65000×65000) or whose size cannot be read is skipped and counted, never decoded and never fatal on its
own. PIL's own DecompressionBombError/Warning counts as a bomb too.

Decoders: torchvision's libjpeg-turbo (batched) for JPEG, ~3x faster than PIL here; PIL for everything
else, PNG included — torchvision 0.29's decode_png crashes the process (SIGSEGV after "libpng error: Not
enough image data") on any PNG whose image data is short, whatever its size, where PIL raises. Images are
decoded in groups of at most MAX_PIXELS claimed pixels and resized as each group is done, so a chunk of
large (or lying) images never holds more than one group's worth of full-size pixels. With `resize=R` every
image comes out R×R (short side scaled to R, antialiased, then the centre R×R crop), otherwise all images
must share one size.
"""
from __future__ import annotations

import io
import struct
import warnings
from collections import Counter
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from ..errors import DataError

# Number of images decoded by this process (pickled CIFAR rows count too). Tests use it to prove
# that a second load is served from the cache.
DECODE_COUNT = 0
CHUNK = 512
MAX_PIXELS = 64 * 1024 * 1024  # 8192×8192: 192 MB decoded; PIL's own bomb limit is set to the same
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BAD = "not a decodable image"
BOMB = f"more than {MAX_PIXELS >> 20}M pixels"
# SOF markers (frame headers: precision, height, width); C4 (DHT), C8 (JPG) and CC (DAC) are not frames
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}   # TEM, RST0-7: no length field


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


def jpeg_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG's frame, read the way libjpeg reads markers (jdmarker.c): bytes that are not
    a marker are skipped, as are 0xFF fill bytes and stuffed FF00; segments are skipped by their length;
    the frame is the one SOF before the first SOS. None if there is none, or two (libjpeg refuses those)."""
    if not blob.startswith(b"\xff\xd8"):
        return None
    i, n, size = 2, len(blob), None
    while i < n:
        if blob[i] != 0xFF:
            i += 1
            continue
        while i < n and blob[i] == 0xFF:
            i += 1
        if i >= n:
            return None
        marker = blob[i]
        i += 1
        if marker == 0x00 or marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9):                     # a second SOI, or EOI before any scan
            return None
        if marker == 0xDA:                             # SOS: the frame is known by now, or never
            return size
        if i + 2 > n:
            return None
        length = struct.unpack(">H", blob[i:i + 2])[0]
        if marker in _SOF:
            if size is not None or length < 8 or i + 7 > n:
                return None
            height, width = struct.unpack(">HH", blob[i + 3:i + 7])
            size = (width, height)
        i += length
    return None


def png_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, which must be its first chunk."""
    if len(blob) < 24 or not blob.startswith(_PNG_MAGIC) or blob[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", blob[16:24])
    return width, height


def _pil_size(blob: bytes) -> tuple[int, int] | str | None:
    """(width, height) from PIL's header reader; BOMB when PIL itself calls it one; None if it cannot read it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as im:
                return im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return BOMB
    except Exception:  # PIL raises many types for files it cannot read
        return None


def claimed_pixels(blob: bytes) -> int | str | None:
    """What the header says the image holds (width × height), before any decoder sees it: BOMB if more than
    MAX_PIXELS (by our reader or PIL's), None if no size can be read (the file is then never decoded)."""
    sizes = [png_size(blob)] if blob.startswith(_PNG_MAGIC) else []
    if blob.startswith(_JPEG_MAGIC):
        sizes.append(jpeg_size(blob))
        if sizes[-1] is None:
            return None   # libjpeg would not find a frame either (or finds one we cannot see): never decode it
    pil = _pil_size(blob)
    if pil == BOMB:
        return BOMB
    sizes.append(pil)
    known = [w * h for w, h in (s for s in sizes if s is not None)]
    if not known or min(known) == 0:
        return None
    return BOMB if max(known) > MAX_PIXELS else max(known)


def _decode_pil(blob: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(blob)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def _decode_one(blob: bytes) -> torch.Tensor | str | None:
    """One image past the gate: libjpeg for a JPEG (PIL if it fails: CMYK, ...), PIL for the rest;
    BOMB if PIL calls it one, None if it does not decode."""
    if blob.startswith(_JPEG_MAGIC):
        try:
            x = decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
            if x.dtype == torch.uint8 and x.dim() == 3 and x.shape[0] == 3 and x.shape[1] > 0 and x.shape[2] > 0:
                return x
        except (RuntimeError, ValueError):
            pass
    try:
        x = _decode_pil(blob)
        return x if x.shape[1] > 0 and x.shape[2] > 0 else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return BOMB
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


def _groups(claims: list[int | str | None]) -> Iterator[list[int]]:
    """Indices of the images to decode, in order, in groups of at most MAX_PIXELS claimed pixels (one
    image at least): what one group holds at full size before it is resized or written."""
    group, pixels = [], 0
    for i, px in enumerate(claims):
        if not isinstance(px, int):
            continue
        if group and pixels + px > MAX_PIXELS:
            yield group
            group, pixels = [], 0
        group.append(i)
        pixels += px
    if group:
        yield group


def decode_groups(blobs: list[bytes | None], resize: int | None = None
                  ) -> Iterator[tuple[list[int], list[torch.Tensor | None], Counter]]:
    """(indices, images, skipped by reason) for `blobs`, one group of at most MAX_PIXELS claimed pixels at a
    time; an image is None (and counted) when it claims too much, has no readable size or does not decode."""
    claims = [None if b is None else claimed_pixels(b) if b else None for b in blobs]
    why: Counter = Counter()
    for b, px in zip(blobs, claims):
        if b is not None and not isinstance(px, int):
            why[BOMB if px == BOMB else BAD] += 1
    if why:
        yield [], [], why
    for idx in _groups(claims):
        why = Counter()
        out: list[torch.Tensor | str | None] = [None] * len(idx)
        todo = list(range(len(idx)))
        if len(idx) > 1 and all(blobs[i].startswith(_JPEG_MAGIC) for i in idx):
            try:  # one call for the group: cheaper per image than one by one
                out = list(decode_jpeg([torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in idx],
                                       mode=ImageReadMode.RGB))
                todo = []
            except RuntimeError:
                pass  # a bad or unusual JPEG in the group: decode one by one to find it
        for k in todo:
            out[k] = _decode_one(blobs[idx[k]])
        for k, x in enumerate(out):
            if not isinstance(x, torch.Tensor):
                why[BOMB if x == BOMB else BAD] += 1
                out[k] = None
            elif resize is not None:
                out[k] = resize_short_side_center_crop(x, resize)
        count_decoded(sum(x is not None for x in out))
        yield idx, out, why


def decode_chunk(blobs: list[bytes | None], resize: int | None = None) -> tuple[list[torch.Tensor | None], Counter]:
    """Each blob decoded to RGB uint8 [3, H, W] (R×R with `resize`), or None (counted by reason) if it cannot be."""
    out: list[torch.Tensor | None] = [None] * len(blobs)
    why: Counter = Counter()
    for idx, imgs, skipped in decode_groups(blobs, resize):
        why.update(skipped)
        for i, x in zip(idx, imgs):
            out[i] = x
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
