"""Files that lie (issue 28), built byte by byte: image headers that claim more pixels than their body holds,
archives whose members claim gigabytes. Shared by test_reliability.py, test_imagefolders.py and test_bad_input.py."""
from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, rows: int = 1) -> bytes:
    """A valid PNG signature and IHDR (8-bit RGB, `width`×`height`) whose image data stops a third of the way into
    its first row (`rows` times that): libpng reports "Not enough image data" (which crashed torchvision's
    decoder), PIL "image file is truncated". (Data that stops at a row boundary, PIL decodes: the rest is zeros.)"""
    assert 0 < width < 2**31 and 0 < height < 2**31, "PNG dimensions are 1 .. 2^31-1 (the spec)"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + min(width, 64)) * rows)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg(width: int, height: int, *, garbage_before_sof: bytes = b"", second_sof: tuple[int, int] | None = None) -> bytes:
    """A baseline JPEG header claiming `width`×`height` (3 components, 4:2:0) with 200 bytes of scan data:
    ~340 bytes in all. `garbage_before_sof`: bytes libjpeg skips ("extraneous bytes before marker");
    `second_sof`: a second frame header (libjpeg refuses two)."""
    def sof(w, h):
        return b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x00\x03\x11\x00"

    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    dht = b"\xff\xc4" + struct.pack(">H", 31) + b"\x00" + bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]) + bytes(range(12))
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    frames = sof(width, height) + (sof(*second_sof) if second_sof else b"")
    return b"\xff\xd8" + dqt + garbage_before_sof + frames + dht + sos + b"\x00" * 200 + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    """A GIF whose logical screen and one frame claim `width`×`height`, with a few bytes of LZW data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming `width`×`height`, with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tar_gz_with_big_member(path: Path, name: str, size: int, others: dict[str, bytes] | None = None) -> Path:
    """A .tar.gz holding `name` of `size` zero bytes (compressed ~1000×: 1 GiB → ~1 MB) beside `others`,
    streamed so that building it holds no more than a megabyte."""
    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def readinto(self, b):
            k = min(len(b), self.left)
            b[:k] = bytes(k)
            self.left -= k
            return k

    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for other, data in (others or {}).items():
            info = tarfile.TarInfo(other)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(size), buffer_size=1 << 20))
    return path
