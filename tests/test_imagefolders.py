"""Real-world image folders (issue #14, issue #17 §3): any size and mode with `resize=R`, bad files
skipped with a count, the archive rules for folders (no FIFO/device is opened, symlinks stay inside),
a content-keyed memory-mapped decode cache, random-resized-crop, and the 2 GB RSS bound."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust_transfer.data import BatchLoader, load_dataset, parse_spec
from robust_transfer.data import cache as dcache
from robust_transfer.data import decode
from robust_transfer.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("own_cache")


def _img(h: int, w: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _reference(path: Path, size: int) -> torch.Tensor:
    """torchvision's Resize(size) (short side, antialiased bilinear) + CenterCrop(size) on the RGB image
    (decoded by torchvision where it can, else by PIL: JPEG decoders differ in chroma upsampling)."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as TF

    try:
        x = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    return TF.center_crop(TF.resize(x, [size], antialias=True), [size, size])


# --- any size, any mode --------------------------------------------------------------------------------

def test_mixed_sizes_and_modes_decode_to_r_by_r(tmp_path):
    ims = {"a/wide.jpg": (_img(30, 50, 1), "JPEG"), "a/tall.png": (_img(70, 20, 2), "PNG"),
           "b/grey.png": (_img(40, 40, 3, "L"), "PNG"), "b/rgba.png": (_img(25, 33, 4, "RGBA"), "PNG"),
           "b/palette.png": (_img(18, 18, 5, "P"), "PNG"), "c/cmyk.jpg": (_img(64, 48, 6, "CMYK"), "JPEG"),
           "c/small.bmp": (_img(9, 12, 7), "BMP"), "c/exact.webp": (_img(16, 16, 8), "WEBP")}
    root = _write(tmp_path / "f", {k: _bytes(im, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
                                   for k, (im, fmt) in ims.items()})
    d = load_dataset(f"imagefolder:{root}:resize=16", progress=False)
    assert d.images.shape == (8, 3, 16, 16) and d.classes == ("a", "b", "c")
    assert d.spec == f"imagefolder:{root}:resize=16"
    names = sorted(ims)  # dataset order: by class, then path
    for i, name in enumerate(names):
        ref = _reference(root / name, 16)
        diff = (d.images[i].int() - ref.int()).abs().max().item()
        assert diff <= 1, (name, diff)  # the same resampling as torchvision's Resize + CenterCrop


def test_without_resize_mixed_sizes_ask_for_it(tmp_path):
    root = _write(tmp_path / "m", {"a/1.png": _bytes(_img(8, 8), "PNG"), "a/2.png": _bytes(_img(9, 8), "PNG")})
    with pytest.raises(DataError, match=r"a/2.png is 9x8 .* 8x8.*resize=R"):
        load_dataset(f"imagefolder:{root}", progress=False)


@pytest.mark.parametrize("text,path,resize,selection", [
    ("imagefolder:/d/pets:resize=224", "/d/pets", 224, None),
    ("imagefolder:/d/pets:resize=224:half-a", "/d/pets", 224, "half-a"),
    ("imagefolder:/d/pets:half-b:resize=64", "/d/pets", 64, "half-b"),
    ("imagefolder:/d/a:b:classes=0-2:resize=32", "/d/a:b", 32, "classes=0-2"),
    ("tiny-imagenet:resize=32", None, 32, None),
])
def test_resize_option_in_the_spec(text, path, resize, selection):
    s = parse_spec(text)
    assert (s.path, s.resize, s.selection) == (path, resize, selection)
    assert parse_spec(str(s)) == s


@pytest.mark.parametrize("text,needle", [
    ("imagefolder:/d:resize=0", "resize=0"), ("imagefolder:/d:resize=4096", "resize=4096"),
    ("imagefolder:/d:resize=abc", "resize=abc"), ("imagefolder:/d:resize=32:resize=64", "once"),
    ("cifar10:resize=224", "upsample"), ("imagefolder:/d:half-a:half-b", "two class selectors"),
    ("imagefolder:/d:resize=99999999999999999999", "resize="),
])
def test_bad_resize_options_are_one_line(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_spec(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


# --- bad files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n broken", b"\xff\xd8\xff\xe0 truncated jpeg",
                                 b"GIF89a", b"BM" + b"\x00" * 60])
def test_corrupt_files_are_skipped_with_a_count(tmp_path, capsys, bad):
    root = _write(tmp_path / "c", {"a/ok.png": _bytes(_img(8, 8), "PNG"), "a/bad.jpg": bad,
                                   "b/ok.jpg": _bytes(_img(12, 10, 1), "JPEG"), "b/notes.md": b"ignored: not an image"})
    d = load_dataset(f"imagefolder:{root}:resize=8", progress=False)
    assert len(d) == 2 and d.classes == ("a", "b")
    err = capsys.readouterr().err
    assert "skipped 1 files (1 not a decodable image)" in err and len(err.strip().splitlines()) == 1
    load_dataset(f"imagefolder:{root}:resize=8", progress=False)  # from the cache: the same count, once
    assert "skipped 1 files" in capsys.readouterr().err


def test_only_bad_files_is_one_line_exit_3(tmp_path, capfd):
    from robust_transfer.cli import main

    root = _write(tmp_path / "bad", {"a/1.jpg": b"junk", "b/2.png": b"\x89PNG junk"})
    with pytest.raises(DataError, match="no usable images .*2 not a decodable image"):
        load_dataset(f"imagefolder:{root}:resize=8", progress=False)
    capfd.readouterr()
    rc = main(["evaluate", "--model", str(tmp_path / "nomodel"), "--dataset", f"imagefolder:{root}:resize=8"])
    assert rc in (3, 4)  # (the model is checked first when both are bad; the data rule is the DataError above)


@pytest.mark.parametrize("mode,size", [("L", (9000, 9000)),      # 81M pixels, grey
                                       ("1", (16000, 6000)),     # 96M pixels, 1-bit: a tiny file
                                       ("L", (8193, 8192))])     # one row over MAX_PIXELS (64 Mi)
def test_decompression_bomb_is_skipped_not_decoded(tmp_path, capsys, mode, size):
    """Issue 17 §2: pixels per image are bounded from the header before decoding (a PNG of a few KB can
    claim hundreds of MB); such a file is skipped with a count, like any file that is not a usable image."""
    from robust_transfer.data import decode

    assert size[0] * size[1] > decode.MAX_PIXELS and Image.MAX_IMAGE_PIXELS == decode.MAX_PIXELS
    big = Image.new(mode, size)
    root = _write(tmp_path / "bomb", {"a/bomb.png": _bytes(big, "PNG"), "a/ok.png": _bytes(_img(8, 8), "PNG")})
    del big
    assert (root / "a/bomb.png").stat().st_size < 200_000
    before = decode.DECODE_COUNT
    d = load_dataset(f"imagefolder:{root}:resize=8", progress=False)
    assert len(d) == 1 and "more than 64M pixels" in capsys.readouterr().err
    assert decode.DECODE_COUNT - before == 1   # only ok.png was decoded


# --- folder safety (issue #17 §3) ----------------------------------------------------------------------

def _folder_with_good_images(root: Path) -> Path:
    return _write(root, {"a/1.png": _bytes(_img(8, 8, 1), "PNG"), "b/2.png": _bytes(_img(8, 8, 2), "PNG")})


def _load_in_subprocess(spec: str, cache: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Load in a child with a timeout, so a hang fails the test instead of blocking the suite."""
    code = textwrap.dedent(f"""
        from robust_transfer.data import load_dataset
        d = load_dataset({spec!r}, progress=False)
        print("LOADED", len(d), d.classes)
    """)
    env = {**os.environ, "RTL_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO / "platform")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("variant", ["fifo-in-class", "fifo-at-top", "dev-zero-symlink", "dev-null-symlink",
                                     "socket"])
def test_non_regular_files_are_never_opened(tmp_path, variant):
    import socket

    root = _folder_with_good_images(tmp_path / "f")
    if variant == "fifo-in-class":
        os.mkfifo(root / "a" / "blocks.png")
    elif variant == "fifo-at-top":
        (root / "c").mkdir()
        os.mkfifo(root / "c" / "x.jpg")
    elif variant == "dev-zero-symlink":
        os.symlink("/dev/zero", root / "a" / "zero.png")
    elif variant == "dev-null-symlink":
        os.symlink("/dev/null", root / "b" / "null.jpeg")
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "a" / "sock.png"))
    r = _load_in_subprocess(f"imagefolder:{root}:resize=8", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "LOADED 2" in r.stdout and "skipped 1 files" in r.stderr
    assert ("not a regular file" in r.stderr) or ("symlink" in r.stderr)


@pytest.mark.parametrize("variant", ["outside-file", "outside-dir-symlink", "dangling", "loop", "inside"])
def test_symlinks_are_resolved_and_kept_inside(tmp_path, capsys, variant):
    root = _folder_with_good_images(tmp_path / "f")
    outside = _write(tmp_path / "outside", {"secret.png": _bytes(_img(8, 8, 9), "PNG")})
    if variant == "outside-file":
        os.symlink(outside / "secret.png", root / "a" / "leak.png")
    elif variant == "outside-dir-symlink":
        os.symlink(outside, root / "c")
    elif variant == "dangling":
        os.symlink(tmp_path / "missing.png", root / "a" / "gone.png")
    elif variant == "loop":
        os.symlink(root / "a" / "loop.png", root / "a" / "loop.png")
    else:  # a symlink to an image inside the folder is an image like any other
        os.symlink(root / "a" / "1.png", root / "b" / "same.png")
    d = load_dataset(f"imagefolder:{root}:resize=8", progress=False)
    err = capsys.readouterr().err
    if variant == "inside":
        assert len(d) == 3 and not err
    else:
        assert len(d) == 2 and "skipped 1 files" in err, err
        assert d.classes == ("a", "b")


def test_oversized_files_are_skipped(tmp_path, capsys, monkeypatch):
    from robust_transfer.data import tree

    monkeypatch.setattr(tree, "MAX_FILE_BYTES", 1000)
    root = _folder_with_good_images(tmp_path / "f")
    (root / "a" / "huge.png").write_bytes(b"\x89PNG" + b"\x00" * 5000)
    d = load_dataset(f"imagefolder:{root}:resize=8", progress=False)
    assert len(d) == 2 and "larger than" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "class"])
def test_non_utf8_names_are_skipped_with_a_count(tmp_path, capsys, where):
    root = _folder_with_good_images(tmp_path / "f")
    raw = os.fsencode(str(root))
    name = b"\xff\xfe-latin1-\xe9.png"
    if where == "file":
        with open(os.path.join(raw, b"a", name), "wb") as f:
            f.write(_bytes(_img(8, 8, 3), "PNG"))
    else:
        os.mkdir(os.path.join(raw, b"cl\xe9ss"))
        with open(os.path.join(raw, b"cl\xe9ss", b"x.png"), "wb") as f:
            f.write(_bytes(_img(8, 8, 3), "PNG"))
    d = load_dataset(f"imagefolder:{root}:resize=8", progress=False)
    assert len(d) == 2 and d.classes == ("a", "b")
    assert "1 name not UTF-8" in capsys.readouterr().err


def test_a_folder_with_only_unsafe_entries_is_one_line(tmp_path):
    root = tmp_path / "f"
    (root / "a").mkdir(parents=True)
    os.mkfifo(root / "a" / "x.png")
    os.symlink("/dev/zero", root / "a" / "y.png")
    r = _load_in_subprocess(f"imagefolder:{root}:resize=8", tmp_path / "cache")
    assert r.returncode != 0 and "DataError" in r.stderr and "no images" in r.stderr


# --- the cache: content-keyed, memory-mapped ---------------------------------------------------------------

@pytest.mark.parametrize("edit", ["same-size-mtime-restored", "move-between-classes", "swap-two-files"])
def test_cache_is_keyed_by_content(tmp_path, edit):
    root = _write(tmp_path / "f", {"a/1.png": _bytes(_img(8, 8, 1), "PNG"), "a/2.png": _bytes(_img(8, 8, 2), "PNG"),
                                   "b/3.png": _bytes(_img(8, 8, 3), "PNG")})
    first = load_dataset(f"imagefolder:{root}", progress=False)
    first_images, first_labels = first.images.clone(), first.labels.clone()
    p1, p2 = root / "a/1.png", root / "a/2.png"
    if edit == "same-size-mtime-restored":
        st = p1.stat()
        arr = np.asarray(Image.open(p1)).copy()
        arr[0, 0] = 255 - arr[0, 0]
        data = _bytes(Image.fromarray(arr), "PNG")
        if len(data) != st.st_size:  # keep the size: re-encode at another compression level until it fits
            pytest.skip("re-encoding changed the size")
        p1.write_bytes(data)
        os.utime(p1, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert p1.stat().st_mtime_ns == st.st_mtime_ns and p1.stat().st_size == st.st_size
    elif edit == "move-between-classes":
        os.replace(p2, root / "b/2.png")
    else:
        b1, b2 = p1.read_bytes(), p2.read_bytes()
        st1, st2 = p1.stat(), p2.stat()
        p1.write_bytes(b2)
        p2.write_bytes(b1)
        os.utime(p1, ns=(st1.st_atime_ns, st1.st_mtime_ns))
        os.utime(p2, ns=(st2.st_atime_ns, st2.st_mtime_ns))
    count = decode.DECODE_COUNT
    again = load_dataset(f"imagefolder:{root}", progress=False)
    assert decode.DECODE_COUNT == count + 3  # decoded afresh, not served stale
    assert not (torch.equal(again.images, first_images) and torch.equal(again.labels, first_labels))
    if edit == "same-size-mtime-restored":
        assert torch.equal(again.images[0, :, 0, 0], 255 - first_images[0, :, 0, 0])


def test_same_size_edit_with_mtime_restored_is_seen(tmp_path):
    """The issue's exact case, with raw bytes so the size certainly stays: a BMP pixel changed in place."""
    im = _img(8, 8, 1)
    root = _write(tmp_path / "f", {"a/1.bmp": _bytes(im, "BMP"), "b/2.bmp": _bytes(_img(8, 8, 2), "BMP")})
    first = load_dataset(f"imagefolder:{root}", progress=False).images.clone()
    p = root / "a/1.bmp"
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the pixel array: one channel of one pixel
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_dataset(f"imagefolder:{root}", progress=False).images
    assert (again.int() - first.int()).abs().sum() > 0


def test_cache_is_memory_mapped_and_pages_are_released(tmp_path):
    root = _write(tmp_path / "f", {f"c{c}/{i}.png": _bytes(_img(20, 30, c * 10 + i), "PNG")
                                   for c in range(3) for i in range(4)})
    d = load_dataset(f"imagefolder:{root}:resize=16", progress=False)
    dirs = [p for p in (tmp_path / "cache" / "decoded").iterdir() if p.is_dir()]
    assert len(dirs) == 1 and (dirs[0] / "images.u8").stat().st_size == 12 * 3 * 16 * 16
    ptr = d.images.untyped_storage().data_ptr()
    assert any(start <= ptr < end for start, end, _ in dcache._MAPS)  # backed by the file's mapping
    ref = d.images.clone()
    dcache.release(d.images)  # the pages come back from the file on the next read
    assert torch.equal(d.images, ref)
    assert d.sha256() == dcache._sha256_of(dirs[0] / "images.u8", tuple(d.images.shape), d.labels)


# --- augmentation at the decoded size ------------------------------------------------------------------------

def test_random_resized_crop_flip():
    from robust_transfer.data.transforms import augmentation_for, random_crop_flip, random_resized_crop_flip

    x = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    a = random_resized_crop_flip(x, torch.Generator().manual_seed(0))
    b = random_resized_crop_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)  # seeded
    assert not torch.equal(a, x)
    # the whole image at scale 1, ratio 1: the image itself or its mirror
    full = random_resized_crop_flip(x, torch.Generator().manual_seed(1), scale=(1, 1), ratio=(1, 1))
    for i in range(len(x)):
        assert torch.equal(full[i], x[i]) or torch.equal(full[i], x[i].flip(-1))
    assert augmentation_for("imagefolder:/d:resize=224") is random_resized_crop_flip
    assert augmentation_for("imagefolder:/d") is random_crop_flip and augmentation_for("cifar10") is random_crop_flip


def test_loader_uses_random_resized_crop_for_resized_folders(tmp_path):
    root = _write(tmp_path / "f", {f"c{c}/{i}.jpg": _bytes(_img(30 + i, 40, c * 10 + i), "JPEG")
                                   for c in range(2) for i in range(4)})
    d = load_dataset(f"imagefolder:{root}:resize=16", progress=False)
    (x, _), = list(BatchLoader(d, 8, shuffle=False, augment=True, seed=0))
    from robust_transfer.data.transforms import random_resized_crop_flip
    from robust_transfer.data.loader import epoch_seed
    g = torch.Generator().manual_seed(epoch_seed(0, 0))
    expected = random_resized_crop_flip(d.images[torch.arange(8)], g).float() / 255
    assert torch.allclose(x, expected)


# --- the 2 GB bound ----------------------------------------------------------------------------------------

RSS_SCRIPT = r"""
import resource, sys, time
import torch
from robust_transfer.data import BatchLoader, load_dataset
spec = sys.argv[1]
t0 = time.perf_counter()
train, test = load_dataset(spec, "train", progress=False), load_dataset(spec, "test", progress=False)
assert train.images.shape[1:] == (3, 224, 224), train.images.shape
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                          torch.nn.Flatten(), torch.nn.Linear(8, train.num_classes))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
seen = 0
for x, y in BatchLoader(train, 128, shuffle=True, augment=True, seed=0):   # one epoch over every image
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(); loss.backward(); opt.step(); seen += len(y)
correct = 0
with torch.no_grad():
    for x, y in BatchLoader(test, 256, shuffle=False):
        correct += (net(x).argmax(1) == y).sum().item()
print(f"trained on {seen}, evaluated {len(test)} (acc {correct / len(test):.3f}) in {time.perf_counter() - t0:.1f}s")
print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_mixed_jpeg_folder(root: Path, classes: int, per_class_train: int, per_class_test: int, seed: int = 0) -> Path:
    """Photo-like JPEGs of mixed sizes (160-400 px a side): a class colour, noise and a gradient."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 215, size=(classes, 3))
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for c in range(classes):
            d = root / split / f"class{c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(160, 400, size=2))
                small = (colours[c] + rng.normal(0, 30, size=(h // 8 + 1, w // 8 + 1, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(small).resize((w, h), Image.BILINEAR).save(d / f"{i:04d}.jpg", quality=85)
    return root


@pytest.mark.slow
def test_224_folder_of_100_classes_x_100_images_trains_and_evaluates_under_2gb(tmp_path):
    root = write_mixed_jpeg_folder(tmp_path / "big", classes=100, per_class_train=80, per_class_test=20)
    env = {**os.environ, "RTL_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO / "platform")}
    peaks = []
    for attempt in ("first (decodes)", "second (cache)"):
        r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, f"imagefolder:{root}:resize=224"], env=env,
                           capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, r.stderr[-2000:]
        peak = float(r.stdout.split("PEAK_RSS_MB")[1])
        print(attempt, r.stdout.strip().splitlines()[0], f"peak RSS {peak:.0f} MB")
        peaks.append(peak)
    split_mb = 10_000 * 3 * 224 * 224 / 2**20
    assert max(peaks) < 2048, f"peak RSS {peaks} MB for a {split_mb:.0f} MB decoded set"


def test_a_large_resize_is_memory_mapped_and_equal_to_the_in_memory_one(tmp_path, monkeypatch):
    """upsample=true on a whole CIFAR split: the resized set lives in the cache, mapped, not in memory."""
    from robust_transfer.data import ImageData, resize_images
    from robust_transfer.data import transforms

    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g),
                     torch.arange(40) % 4, ("a", "b", "c", "d"), "cifar10", "train")
    small = resize_images(data, 24)  # under the threshold: in memory
    monkeypatch.setattr(transforms, "ON_DISK_BYTES", 1000)
    big = resize_images(data, 24)
    ptr = big.images.untyped_storage().data_ptr()
    assert any(start <= ptr < end for start, end, _ in dcache._MAPS)
    assert torch.equal(big.images, small.images) and torch.equal(big.labels, data.labels)
    assert big.sha256() == small.sha256()
    assert resize_images(data, 24).images.untyped_storage().data_ptr() != 0  # a second call reads the cache


# --- issue 28: images that lie about their size, archives that lie about theirs, the smaller doors -----------------
import support.hostile_files as hostile  # noqa: E402

LIARS = {"jpeg-65000": hostile.jpeg(65000, 65000), "jpeg-20000": hostile.jpeg(20000, 20000),
         "jpeg-8193x8192": hostile.jpeg(8193, 8192), "jpeg-junk-before-frame": hostile.jpeg(65000, 65000, garbage_before_sof=b"\x01\x02"),
         "png-12000": hostile.png(12000, 12000), "png-8193x8192": hostile.png(8193, 8192),
         "png-2^31-1": hostile.png(2**31 - 1, 2**31 - 1), "gif-65535": hostile.gif(65535, 65535),
         "bmp-100000": hostile.bmp(100000, 100000)}


@pytest.mark.parametrize("name", sorted(LIARS))
def test_a_header_claiming_more_than_the_cap_is_a_bomb_before_any_decoder(name):
    blob = LIARS[name]
    assert len(blob) < 400
    assert decode.claimed_pixels(blob) == decode.BOMB
    count = decode.DECODE_COUNT
    out, why = decode.decode_chunk([blob, _bytes(_img(8, 8), "PNG")], resize=8)
    assert out[0] is None and out[1] is not None and why == {decode.BOMB: 1}
    assert decode.DECODE_COUNT == count + 1   # the liar never reached a decoder


def test_our_jpeg_reader_agrees_with_pil_and_libjpeg_on_real_files():
    """The gate reads JPEG frames itself (as libjpeg does): on real files, with EXIF thumbnails, progressive
    scans, restart markers and odd sizes, it must say exactly what the decoders decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    thumb = _bytes(_img(40, 30, 5), "JPEG")
    exif = Image.Exif()
    exif[0x010E] = "a description"
    variants = [(_img(37, 53, 1), {}), (_img(64, 48, 2), {"progressive": True}), (_img(9, 300, 3), {"quality": 20}),
                (_img(120, 80, 4), {"exif": exif.tobytes()}), (_img(33, 17, 6, "L"), {}),
                (_img(50, 40, 7), {"restart_marker_blocks": 1}), (_img(25, 25, 8, "CMYK"), {})]
    checked = 0
    for im, kw in variants:
        blob = _bytes(im, "JPEG", **kw)
        if "exif" in kw:   # an embedded thumbnail (a JPEG inside APP1) must not be taken for the frame
            blob = blob[:2] + b"\xff\xe1" + (len(thumb) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumb + blob[2:]
        assert decode.jpeg_size(blob) == im.size
        assert decode.claimed_pixels(blob) == im.size[0] * im.size[1]
        if im.mode != "CMYK":
            x = decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
            assert tuple(x.shape[1:]) == (im.size[1], im.size[0])
        checked += 1
    assert checked == len(variants)
    assert decode.jpeg_size(hostile.jpeg(16, 16, second_sof=(65000, 65000))) is None   # libjpeg refuses two frames
    assert decode.claimed_pixels(hostile.jpeg(16, 16, second_sof=(65000, 65000))) is None


@pytest.mark.parametrize("size", [(16, 16), (200, 200), (8000, 8000)])
def test_a_png_with_short_image_data_is_skipped_not_a_crash(tmp_path, size):
    """torchvision 0.29's decode_png dies with SIGSEGV ("libpng error: Not enough image data") on such a PNG,
    at any size: PNGs are decoded by PIL, which raises. In a child process, so a crash fails this test only."""
    root = _folder_with_good_images(tmp_path / "f")
    (root / "a" / "short.png").write_bytes(hostile.png(*size))
    r = _load_in_subprocess(f"imagefolder:{root}:resize=8", tmp_path / "cache")
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "LOADED 2" in r.stdout and "skipped 1 files (1 not a decodable image)" in r.stderr


def test_decoding_groups_hold_at_most_the_pixel_cap():
    claims = [decode.MAX_PIXELS // 2, decode.MAX_PIXELS // 2, 1, None, decode.BOMB, decode.MAX_PIXELS, 5, 5]
    groups = list(decode._groups(claims))
    assert groups == [[0, 1], [2], [5], [6, 7]]
    assert all(sum(claims[i] for i in g) <= decode.MAX_PIXELS for g in groups)


def _tar(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_members_are_checked_by_their_header_before_they_are_read(tmp_path, monkeypatch, capsys):
    from robust_transfer.data import tree

    good = {f"{c}/{i}.png": _bytes(_img(8, 8, i), "PNG") for c in "ab" for i in range(2)}
    arch = _tar(tmp_path / "a.tar.gz", {**good, "a/big.png": b"\0" * 5000})
    monkeypatch.setattr(tree, "MAX_FILE_BYTES", 4000)
    reads = []
    real = tree.tarfile.TarFile.extractfile

    def spy(self, member):   # what is read, member by member
        reads.append(member.name)
        return real(self, member)

    monkeypatch.setattr(tree.tarfile.TarFile, "extractfile", spy)
    d = load_dataset(f"imagefolder:{arch}:resize=8", progress=False)
    assert len(d) == 4 and "skipped 1 files (1 larger than 0 MB)" in capsys.readouterr().err
    assert "a/big.png" not in reads and sorted(reads) == sorted(good)
    monkeypatch.setattr(tree, "MAX_ARCHIVE_BYTES", 3 * len(good["a/0.png"]))   # the archive's total
    with pytest.raises(DataError, match="holds more than .* extract it"):
        load_dataset(f"imagefolder:{_tar(tmp_path / 'b.tar.gz', good)}:resize=8", progress=False)


@pytest.mark.parametrize("where", ["folder", "archive"])
def test_an_empty_class_folder_is_dropped_with_a_count(tmp_path, capsys, where):
    good = {f"{c}/{i}.png": _bytes(_img(8, 8, i), "PNG") for c in "ab" for i in range(2)}
    if where == "folder":
        root = _write(tmp_path / "f", good)
        (root / "empty").mkdir()
        (root / "also-empty" / "sub").mkdir(parents=True)
        spec = f"imagefolder:{root}"
    else:
        spec = f"imagefolder:{_tar(tmp_path / 'f.tar.gz', good, dirs=('empty', 'also-empty', 'also-empty/sub'))}"
    for _ in range(2):   # decoded, then from the cache: the same report
        d = load_dataset(spec, progress=False)
        assert d.classes == ("a", "b")
        err = capsys.readouterr().err
        assert "dropped 2 empty class folders" in err and len(err.strip().splitlines()) == 1, err


def test_a_one_class_folder_is_a_data_error_exit_3(tmp_path, capfd):
    from robust_transfer.cli import main

    from robust_transfer.data.validation import carve_validation

    root = _write(tmp_path / "one", {f"{split}/cat/{i}.png": _bytes(_img(8, 8, i), "PNG") for i in range(6)
                                     for split in ("train", "test")})
    data = load_dataset(f"imagefolder:{root}", progress=False)   # loading it is fine; training on it is not
    with pytest.raises(DataError, match="has one class \\('cat'\\); a classifier needs at least 2"):
        carve_validation(data)
    capfd.readouterr()
    rc = main(["train", "--dataset", f"imagefolder:{root}", "--iterations", "1", "--progress", "false"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "has one class ('cat')" in err[0], err


@pytest.mark.parametrize("text,option", [("imagefolder:/d:evil=1", "evil"), ("imagefolder:/d:resize=8:evil=1", "evil"),
                                         ("imagefolder:/d:evil=1:resize=8", "evil"), ("imagefolder:/d:Resize=8", "Resize"),
                                         ("imagefolder:/d:class=0-4", "class")])
def test_an_unknown_image_folder_option_is_named(text, option):
    with pytest.raises(ConfigError) as e:
        parse_spec(text)
    assert f"unknown option {option!r}; allowed: resize=R, half-a" in str(e.value) and "\n" not in str(e.value)
    assert parse_spec("imagefolder:x=1").path == "x=1"   # a relative path that merely contains '=' is a path


@pytest.mark.parametrize("extra", ["fifo", "socket", "bad-name", "empty-class-folder"])
def test_the_skip_report_belongs_to_the_folder_even_when_its_images_equal_a_cached_one(tmp_path, capsys, extra):
    """Two folders with the same usable images: the second must not reuse the first's (empty) skip report."""
    import socket

    files = {f"{c}/{i}.png": _bytes(_img(8, 8, i), "PNG") for c in "ab" for i in range(2)}
    plain, other = _write(tmp_path / "plain", files), _write(tmp_path / "other", files)
    load_dataset(f"imagefolder:{plain}", progress=False)
    assert capsys.readouterr().err == ""
    if extra == "fifo":
        os.mkfifo(other / "a" / "x.png")
    elif extra == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(other / "a" / "s.png"))
    elif extra == "bad-name":
        os.close(os.open(os.path.join(os.fsencode(other / "a"), b"\xff\xfe.png"), os.O_CREAT | os.O_WRONLY))
    else:
        (other / "c").mkdir()
    d = load_dataset(f"imagefolder:{other}", progress=False)
    assert len(d) == 4
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and ("skipped 1 files" in err or "dropped 1 empty class folder" in err), err
