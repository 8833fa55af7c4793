"""Tests for robust_transfer.data: every source format is written in its real layout into tmp_path."""
from __future__ import annotations

import io
import math
import multiprocessing
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust_transfer.data import (DATASET_NAMES, BatchLoader, DatasetSpec, ImageData, cache_dir, default_data_dir,
                                  load_dataset, parse_spec, resize_images, stratified_subset)
from robust_transfer.data import decode
from robust_transfer.data.subsets import class_halves
from robust_transfer.data.transforms import _resize_via_float, crop_windows, random_crop_flip, resize_uint8
from robust_transfer.errors import ConfigError, DataError

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(autouse=True)
def data_env(own_cache, tmp_path, monkeypatch):
    """Every test caches into its own tmp dir and never sees the real data unless it asks."""
    monkeypatch.setenv("RTL_DATA_DIR", str(tmp_path / "no-data-here"))


def _rgb(seed: int, h: int = 8, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    return root


def _write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for rel, blob in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


# --- an image folder: classes cat/dog/emu, train/ and test/, PNGs with known pixels ------------------

FOLDER_LAYOUT = {  # path -> seed of its pixels; one upper-case extension, one stray text file
    "train/dog/b.png": 1, "train/dog/a.png": 2, "train/cat/x.PNG": 3, "train/emu/1.png": 4,
    "train/emu/2.png": 5, "train/emu/sub/3.png": 6,
    "test/cat/t.png": 7, "test/emu/u.png": 8, "test/dog/v.png": 9,
}
# expected order: by class (cat, dog, emu) then path
FOLDER_TRAIN = [("train/cat/x.PNG", 0), ("train/dog/a.png", 1), ("train/dog/b.png", 1),
                ("train/emu/1.png", 2), ("train/emu/2.png", 2), ("train/emu/sub/3.png", 2)]
FOLDER_TEST = [("test/cat/t.png", 0), ("test/dog/v.png", 1), ("test/emu/u.png", 2)]


def _folder_files(prefix: str = "") -> dict[str, bytes]:
    files = {prefix + p: _png(_rgb(s)) for p, s in FOLDER_LAYOUT.items()}
    files[prefix + "README.txt"] = b"not an image"
    return files


def make_imagefolder(tmp_path: Path, kind: str) -> Path:
    if kind == "dir":
        return _write_files(tmp_path / "pets", _folder_files())
    return _write_tar(tmp_path / "pets.tar.gz", _folder_files("pets/"))  # one top-level folder inside


def _expected(entries):
    images = torch.stack([torch.from_numpy(_rgb(FOLDER_LAYOUT[p])).permute(2, 0, 1) for p, _ in entries])
    return images, torch.tensor([c for _, c in entries])


# --- CIFAR pickles in torchvision's layout ----------------------------------------------------------

CIFAR = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                     "batches.meta", b"label_names", b"labels", 10),
         "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_label_names", b"fine_labels", 100)}


def make_cifar(data_dir: Path, name: str, per_file: int = 12) -> dict:
    """Writes the pickles; returns {split: (rows uint8 [N, 3072], labels)} in file order."""
    folder, train, test, meta, names_key, labels_key, k = CIFAR[name]
    (data_dir / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, files in (("train", train), ("test", test)):
        rows, labels = [], []
        for f in files:
            data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            lab = [int(v) for v in rng.integers(0, k, per_file)]
            batch = {b"batch_label": b"x", labels_key: lab, b"data": data, b"filenames": [b"f"] * per_file}
            if name == "cifar100":
                batch[b"coarse_labels"] = [0] * per_file
            with open(data_dir / folder / f, "wb") as fh:
                pickle.dump(batch, fh, protocol=4)  # tests may write pickles; the loader never loads them freely
            rows.append(data)
            labels += lab
        out[split] = (np.concatenate(rows), labels)
    with open(data_dir / folder / meta, "wb") as fh:
        pickle.dump({names_key: [f"class{i}".encode() for i in range(k)], b"num_vis": 3072}, fh, protocol=4)
    return out


# --- Tiny-ImageNet-200 layout ---------------------------------------------------------------------

TINY_WNIDS = ["n03", "n01", "n02"]  # deliberately not sorted: classes follow wnids.txt


def _tiny_files(prefix: str = "") -> dict[str, bytes]:
    files = {prefix + "wnids.txt": "\n".join(TINY_WNIDS).encode() + b"\n",
             prefix + "words.txt": b"n01\tone\nn02\ttwo\nn03\tthree\n"}
    for w in TINY_WNIDS:
        files[f"{prefix}train/{w}/{w}_boxes.txt"] = b""
        for i in range(2):
            files[f"{prefix}train/{w}/images/{w}_{i}.JPEG"] = _jpeg(np.full((16, 16, 3), 40 * i + 20, np.uint8))
    grey = io.BytesIO()
    Image.fromarray(np.full((16, 16), 123, np.uint8), mode="L").save(grey, format="JPEG", quality=95)
    files[f"{prefix}train/n01/images/n01_9.JPEG"] = grey.getvalue()  # a greyscale image, as in the real set
    val = ["n02", "n03", "n01", "n02"]
    for i, w in enumerate(val):
        files[f"{prefix}val/images/val_{i}.JPEG"] = _jpeg(np.full((16, 16, 3), 200, np.uint8))
    files[prefix + "val/val_annotations.txt"] = "".join(f"val_{i}.JPEG\t{w}\t0\t0\t15\t15\n"
                                                        for i, w in enumerate(val)).encode()
    return files


def make_tiny(data_dir: Path, kind: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "dir":
        return _write_files(data_dir / "tiny-imagenet-200", _tiny_files())
    return _write_tar(data_dir / "tiny-imagenet-200.tar.gz", _tiny_files("tiny-imagenet-200/"))


# ================================================================================================
# specs

@pytest.mark.parametrize("text, expected", [
    ("cifar10", DatasetSpec("cifar10")),
    (" cifar100 ", DatasetSpec("cifar100")),
    ("cifar10-jpeg:half-a", DatasetSpec("cifar10-jpeg", None, "half-a")),
    ("tiny-imagenet:half-b", DatasetSpec("tiny-imagenet", None, "half-b")),
    ("cifar10:classes=0-4", DatasetSpec("cifar10", None, "classes=0-4")),
    ("cifar100:classes=0,2,5-7", DatasetSpec("cifar100", None, "classes=0,2,5-7")),
    ("imagefolder:/data/pets.tar.gz", DatasetSpec("imagefolder", "/data/pets.tar.gz")),
    ("imagefolder:C:/a:b/pets:half-b", DatasetSpec("imagefolder", "C:/a:b/pets", "half-b")),
    ("imagefolder:x:y", DatasetSpec("imagefolder", "x:y")),  # ':y' is no selector, so part of the path
])
def test_parse_spec_good(text, expected):
    assert parse_spec(text) == expected
    assert parse_spec(str(expected)) == expected


@pytest.mark.parametrize("text, named", [
    ("cifar-10", "'cifar-10'"), ("", "''"), ("mnist:half-a", "'mnist:half-a'"),
    ("cifar10:half-c", "'half-c'"), ("cifar10:classes=4-1", "'4-1'"), ("cifar10:classes=a", "'a'"),
    ("cifar10:classes=1,1", "classes=1,1"), ("cifar10:classes=", "''"), ("imagefolder:", "imagefolder"),
])
def test_parse_spec_bad(text, named):
    with pytest.raises(ConfigError) as e:
        parse_spec(text)
    msg = str(e.value)
    assert named in msg and "\n" not in msg


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="cifar10-jpeg, tiny-imagenet, imagefolder:PATH"):
        parse_spec("imagenet")
    assert DATASET_NAMES == ("cifar10", "cifar100", "cifar10-jpeg", "tiny-imagenet", "imagefolder:PATH")


@pytest.mark.parametrize("k", [1, 2, 7, 10, 100, 200])
def test_class_halves_partition(k):
    a, b = class_halves(k)
    assert len(a) == math.ceil(k / 2) and set(a).isdisjoint(b) and sorted(a + b) == list(range(k))
    assert a == sorted(a) and b == sorted(b) and class_halves(k) == (a, b)


def test_class_halves_are_pinned():
    # other runs (and papers' tables) depend on exactly these halves; a change must be deliberate
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert class_halves(10) == (sorted(perm[:5]), sorted(perm[5:]))


# ================================================================================================
# sources

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, name):
    written = make_cifar(tmp_path, name)
    for split in ("train", "test"):
        d = load_dataset(name, split, data_dir=tmp_path, progress=False)
        rows, labels = written[split]
        order = sorted(range(len(labels)), key=lambda i: labels[i])  # by class, file order within a class
        assert d.images.dtype == torch.uint8 and d.images.is_contiguous()
        assert d.images.shape == (len(labels), 3, 32, 32) and d.image_size == 32
        assert d.labels.dtype == torch.int64 and d.labels.tolist() == [labels[i] for i in order]
        assert torch.equal(d.images, torch.from_numpy(rows[order]).reshape(-1, 3, 32, 32))
        assert d.classes == tuple(f"class{i}" for i in range(CIFAR[name][6])) and d.split == split
        assert d.spec == name


def test_cifar_pixels_are_channel_planes(tmp_path):
    make_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)[None]
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": row, b"labels": [3]}, fh, protocol=4)
    d = load_dataset("cifar10", "test", data_dir=tmp_path, progress=False)
    assert d.images[0, :, 5, 7].tolist() == [10, 20, 30] and d.labels.tolist() == [3]


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless if it ran, but the loader must refuse to call it


def test_cifar_unpickler_refuses_code(tmp_path):
    make_cifar(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": []}, fh, protocol=4)
    with pytest.raises(DataError, match="refusing to unpickle .*getcwd"):
        load_dataset("cifar10", "test", data_dir=tmp_path, progress=False)


def test_cifar_missing_says_what_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", data_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert str(tmp_path / "cifar-100-python") in msg and "--download" in msg and "--data-dir" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_imagefolder(tmp_path, kind):
    root = make_imagefolder(tmp_path, kind)
    for split, entries in (("train", FOLDER_TRAIN), ("test", FOLDER_TEST)):
        d = load_dataset(f"imagefolder:{root}", split, progress=False)
        images, labels = _expected(entries)
        assert d.classes == ("cat", "dog", "emu") and d.num_classes == 3
        assert torch.equal(d.images, images) and torch.equal(d.labels, labels)  # PNG pixels round-trip exactly
        assert d.spec == f"imagefolder:{root}" and d.split == split and len(d) == len(entries)


def test_imagefolder_without_splits_is_all_train(tmp_path):
    root = _write_files(tmp_path / "flat", {"b/1.png": _png(_rgb(1)), "a/2.png": _png(_rgb(2)),
                                            "a/3.png": _png(_rgb(3)), "loose.png": _png(_rgb(4))})
    d = load_dataset(f"imagefolder:{root}", "train", progress=False)
    assert d.classes == ("a", "b") and d.labels.tolist() == [0, 0, 1]  # loose.png has no class folder
    with pytest.raises(DataError, match="no test split"):
        load_dataset(f"imagefolder:{root}", "test", progress=False)


def test_imagefolder_val_is_the_test_split_and_classes_are_shared(tmp_path):
    root = _write_files(tmp_path / "tv", {"train/b/1.png": _png(_rgb(1)), "val/a/2.png": _png(_rgb(2))})
    tr = load_dataset(f"imagefolder:{root}", "train", progress=False)
    te = load_dataset(f"imagefolder:{root}", "test", progress=False)
    assert tr.classes == te.classes == ("a", "b")
    assert tr.labels.tolist() == [1] and te.labels.tolist() == [0]


def test_imagefolder_greyscale_and_palette_become_rgb(tmp_path):
    grey = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L").save(grey, format="PNG")
    bmp = io.BytesIO()
    Image.fromarray(_rgb(5)).save(bmp, format="BMP")  # torchvision cannot read BMP: PIL fallback
    root = _write_files(tmp_path / "g", {"a/g.png": grey.getvalue(), "b/c.bmp": bmp.getvalue()})
    d = load_dataset(f"imagefolder:{root}", progress=False)
    assert d.images.shape == (2, 3, 8, 8)
    assert torch.equal(d.images[0], torch.arange(64, dtype=torch.uint8).reshape(8, 8).expand(3, 8, 8))
    assert torch.equal(d.images[1], torch.from_numpy(_rgb(5)).permute(2, 0, 1))


def test_imagefolder_mixed_sizes_name_the_file(tmp_path):
    root = _write_files(tmp_path / "m", {"a/1.png": _png(_rgb(1)), "a/2.png": _png(_rgb(2, 9, 8))})
    with pytest.raises(DataError, match=r"a/2.png is 9x8 .* 8x8"):
        load_dataset(f"imagefolder:{root}", progress=False)


def test_imagefolder_corrupt_image_is_skipped_with_a_count(tmp_path, capsys):
    root = _write_files(tmp_path / "c", {"a/1.png": _png(_rgb(1)), "a/2.png": b"\x89PNG broken"})
    d = load_dataset(f"imagefolder:{root}", progress=False)
    assert len(d) == 1 and "skipped 1 files (1 not a decodable image)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_tiny_imagenet(tmp_path, kind):
    make_tiny(tmp_path / "data", kind)
    tr = load_dataset("tiny-imagenet", "train", data_dir=tmp_path / "data", progress=False)
    assert tr.classes == tuple(TINY_WNIDS) and tr.images.shape == (7, 3, 16, 16)
    assert tr.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    grey = tr.images[4]  # class n01 (label 1): n01_0, n01_1, n01_9 (the greyscale one)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert (grey.int() - 123).abs().max() <= 2  # JPEG: within rounding of the written value
    assert (tr.images[0].int() - 20).abs().max() <= 2 and (tr.images[1].int() - 60).abs().max() <= 2
    te = load_dataset("tiny-imagenet", "test", data_dir=tmp_path / "data", progress=False)
    # val_0..3 are n02, n03, n01, n02 -> labels 2, 0, 1, 2, sorted by class then file name
    assert te.labels.tolist() == [0, 1, 2, 2] and te.classes == tuple(TINY_WNIDS)


def test_cifar10_jpeg_reads_the_archive_layout(tmp_path):
    files = {f"cifar10-jpeg/{s}/{c}/{i:04d}.jpg": _jpeg(np.full((32, 32, 3), 10 * i, np.uint8))
             for s in ("train", "test") for c in ("bird", "airplane") for i in range(3 if s == "train" else 1)}
    _write_tar(tmp_path / "cifar10-jpeg.tar.gz", files)
    d = load_dataset("cifar10-jpeg", data_dir=tmp_path, progress=False)
    assert d.classes == ("airplane", "bird") and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [int(d.images[i].float().mean().round()) for i in range(3)] == [0, 10, 20]
    assert len(load_dataset("cifar10-jpeg:classes=1", "test", data_dir=tmp_path, progress=False)) == 1


@pytest.mark.parametrize("spec, named", [
    ("tiny-imagenet", "tiny-imagenet-200.tar.gz"), ("cifar10-jpeg", "cifar10-jpeg.tar.gz"),
    ("cifar10", "cifar-10-batches-py"), ("imagefolder:{tmp}/nope.tar.gz", "nope.tar.gz"),
])
def test_missing_data_names_path_and_dataset(tmp_path, spec, named):
    with pytest.raises(DataError) as e:
        load_dataset(spec.format(tmp=tmp_path), data_dir=tmp_path / "empty", progress=False)
    msg = str(e.value)
    assert named in msg and msg.split(":")[0] in spec and "\n" not in msg


@pytest.mark.parametrize("member", ["../evil.png", "/abs/evil.png", "pets/train/a/../../../evil.png", "symlink",
                                    "hardlink"])
def test_archive_path_traversal_refused(tmp_path, member):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        ok = _png(_rgb(0))
        info = tarfile.TarInfo("pets/train/a/ok.png")
        info.size = len(ok)
        tar.addfile(info, io.BytesIO(ok))
        if member in ("symlink", "hardlink"):
            info = tarfile.TarInfo(f"pets/train/a/{member}.png")
            info.type = tarfile.SYMTYPE if member == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info = tarfile.TarInfo(member)
            info.size = len(ok)
            tar.addfile(info, io.BytesIO(ok))
    with pytest.raises(DataError) as e:
        load_dataset(f"imagefolder:{path}", progress=False)
    assert (member if "/" in member else f"{member}.png") in str(e.value)
    assert ("link member" if "link" in member else "unsafe member") in str(e.value)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


# ================================================================================================
# selection, subsets, ImageData

def test_class_selection_relabels(tmp_path):
    root = make_imagefolder(tmp_path, "dir")
    d = load_dataset(f"imagefolder:{root}:classes=0,2", progress=False)
    full_images, _ = _expected(FOLDER_TRAIN)
    assert d.classes == ("cat", "emu") and d.labels.tolist() == [0, 1, 1, 1]
    assert torch.equal(d.images, full_images[[0, 3, 4, 5]]) and d.spec == f"imagefolder:{root}:classes=0,2"


def test_halves_select_disjoint_relabelled_classes(tmp_path):
    make_cifar(tmp_path, "cifar10", per_file=40)
    full = load_dataset("cifar10", data_dir=tmp_path, progress=False)
    a = load_dataset("cifar10:half-a", data_dir=tmp_path, progress=False)
    b = load_dataset("cifar10:half-b", data_dir=tmp_path, progress=False)
    ia, ib = class_halves(10)
    assert a.classes == tuple(f"class{i}" for i in ia) and b.classes == tuple(f"class{i}" for i in ib)
    assert set(a.classes).isdisjoint(b.classes) and len(a) + len(b) == len(full)
    for part, idx in ((a, ia), (b, ib)):
        mask = torch.isin(full.labels, torch.tensor(idx))
        assert torch.equal(part.images, full.images[mask])
        assert torch.equal(torch.tensor(idx)[part.labels], full.labels[mask])  # label j means class idx[j]


def test_classes_out_of_range_is_a_config_error(tmp_path):
    make_cifar(tmp_path, "cifar10")
    with pytest.raises(ConfigError, match="classes=8-12.*0-9"):
        load_dataset("cifar10:classes=8-12", data_dir=tmp_path, progress=False)


def _toy(n_per_class=(5, 7, 9)) -> ImageData:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return ImageData(images, labels, tuple("abc"[:len(n_per_class)]), "toy", "train")


def test_stratified_subset():
    d = _toy()
    s = stratified_subset(d, 4, seed=1)
    assert torch.bincount(s.labels).tolist() == [4, 4, 4] and len(s) == 12
    ids = s.images[:, 0, 0, 0].long()  # each toy image holds its own index
    assert ids.tolist() == sorted(ids.tolist()) and torch.equal(d.labels[ids], s.labels)
    assert torch.equal(stratified_subset(d, 4, seed=1).images, s.images)
    assert not torch.equal(stratified_subset(d, 4, seed=2).images, s.images)
    small = stratified_subset(d, 2, seed=1).images[:, 0, 0, 0].tolist()
    assert set(small) <= set(ids.tolist())  # nested: fewer per class is a subset of more
    assert len(stratified_subset(d, 5).labels) == 15


@pytest.mark.parametrize("per_class, error", [(6, DataError), (0, ConfigError), (2.5, ConfigError)])
def test_stratified_subset_errors(per_class, error):
    with pytest.raises(error) as e:
        stratified_subset(_toy(), per_class)
    assert f"per_class={per_class}" in str(e.value)
    if error is DataError:
        assert "'a' has 5 examples" in str(e.value) and "1..5" in str(e.value)


def test_imagedata_basics():
    d = _toy()
    assert len(d) == 21 and d.num_classes == 3 and d.image_size == 4
    h = d.sha256()
    assert len(h) == 64 and d.sha256() == h == _toy().sha256()
    assert d.subset(torch.arange(20)).sha256() != h
    sub = d.subset(torch.tensor([20, 0]))
    assert sub.labels.tolist() == [2, 0] and sub.classes == d.classes and sub.images[0, 0, 0, 0] == 20
    with pytest.raises(ValueError):
        ImageData(d.images.float(), d.labels, d.classes, "toy", "train")
    with pytest.raises(ValueError):
        ImageData(d.images, d.labels, ("a", "b"), "toy", "train")  # label 2 has no class name


@pytest.mark.parametrize("size", [2, 4, 6, 224])
def test_resize_images(size):
    d = _toy()
    r = resize_images(d, size)
    assert r.images.shape == (21, 3, size, size) and r.images.dtype == torch.uint8
    # constant images stay exactly constant under bilinear resampling
    assert torch.equal(r.images[:, :, 0, 0], d.images[:, :, 0, 0]) and torch.equal(r.images.amin((2, 3)),
                                                                                  r.images.amax((2, 3)))
    assert torch.equal(r.labels, d.labels)
    assert resize_images(d, 4) is d


def test_resize_values():
    x = torch.tensor([[0, 100], [200, 40]], dtype=torch.uint8).expand(1, 3, 2, 2)
    d = ImageData(x.contiguous(), torch.zeros(1, dtype=torch.int64), ("a",), "toy", "train")
    assert resize_images(d, 1).images.flatten().tolist() == [85, 85, 85]  # 2x downscale of 2x2 = the mean
    big = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    for size in (32, 224):  # the CPU uint8 kernel and the float path other devices use agree to 1/255
        assert (resize_uint8(big, size).int() - _resize_via_float(big, size).int()).abs().max() <= 1


# ================================================================================================
# BatchLoader and augmentation

@pytest.mark.parametrize("batch_size, shuffle, expected", [
    (4, True, 5),     # 21 images, at least two full batches: the ragged last batch (1 image) is dropped
    (4, False, 6),    # an unshuffled pass (evaluation) serves every image
    (10, True, 2),    # two full batches: the last image is dropped
    (20, True, 1),    # fewer than two full batches: every image, the last one merged into the batch before
    (21, True, 1), (50, True, 1), (50, False, 1), (1, True, 21)])
def test_loader_length_follows_the_one_last_batch_rule(batch_size, shuffle, expected):
    loader = BatchLoader(_toy(), batch_size, shuffle=shuffle)
    batches = list(loader)
    assert len(loader) == len(batches) == expected
    seen = sum(len(y) for _, y in batches)
    assert seen == (21 // batch_size * batch_size if shuffle and 21 >= 2 * batch_size else 21)
    assert not shuffle or batch_size == 1 or min(len(y) for _, y in batches) >= 2   # BatchNorm trains on every batch


def test_one_seed_derivation_for_order_and_augmentation():
    """The index form and the pixel form are one loader: the same order, the same augmented pixels."""
    from robust_transfer.data.loader import epoch_seed

    d = ImageData(torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8), torch.arange(12) % 2, ("a", "b"), "toy",
                  "train")
    loader = BatchLoader(d, 4, augment=True, seed=3)
    pixels = [(x, y) for x, y in loader]
    index_form = BatchLoader(d, 4, augment=True, seed=3)
    for (x, y), idx in zip(pixels, index_form.epoch(0)):
        assert torch.equal(index_form.pixels(idx), x) and torch.equal(index_form.labels[idx], y)
    g = torch.Generator().manual_seed(epoch_seed(3, 0))
    assert torch.equal(torch.cat(index_form.epoch(0)), torch.randperm(12, generator=g))
    assert epoch_seed(0, 1) != epoch_seed(1, 0) and epoch_seed(0, 1) != epoch_seed(0, 1, "attack")


@pytest.mark.parametrize("shuffle", [True, False])
def test_loader_covers_each_example_once(shuffle):
    d = _toy()
    seen = []
    for x, y in BatchLoader(d, 5, shuffle=shuffle):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 4, 4) and 0 <= x.min() and x.max() <= 1
        ids = (x[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(d.labels[ids], y) and y.dtype == torch.int64
        seen += ids.tolist()
    assert len(set(seen)) == len(seen) and set(seen) <= set(range(21))
    if shuffle:   # 4 full batches: the ragged last batch (one image) is dropped
        assert len(seen) == 20 and seen != sorted(seen)
    else:         # an evaluation pass: every image, in order
        assert seen == list(range(21))


def _order(loader):
    return [(x[:, 0, 0, 0] * 255).round().long().tolist() for x, _ in loader]


def test_loader_epochs_are_seeded():
    d = _toy()
    a = BatchLoader(d, 8, seed=3)
    e0, e1 = _order(a), _order(a)  # two __iter__ calls = epochs 0 and 1
    assert e0 != e1 and a.next_epoch == 2
    b = BatchLoader(d, 8, seed=3)
    assert _order(b) == e0
    b.set_epoch(1)
    assert _order(b) == e1  # a resumed run replays the same batches
    assert _order(BatchLoader(d, 8, seed=4)) != e0


def test_loader_augment_and_resize_are_reproducible():
    d = ImageData(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.zeros(10, dtype=torch.int64),
                  ("a",), "toy", "train")
    runs = []
    for _ in range(2):
        loader = BatchLoader(d, 4, augment=True, seed=1, resize=16)
        runs.append([x for x, _ in loader])
        assert len(runs[-1]) == 2 and all(x.shape == (4, 3, 16, 16) for x in runs[-1])   # 10 images: 2 full batches
    assert all(torch.equal(p, q) for p, q in zip(*runs))
    plain = [x for x, _ in BatchLoader(d, 10, shuffle=False, augment=True, seed=1)]
    assert plain[0].shape == (10, 3, 8, 8) and not torch.equal(plain[0], d.images.float() / 255)


def test_crop_windows_match_slices():
    padded = torch.arange(2 * 3 * 10 * 10, dtype=torch.uint8).reshape(2, 3, 10, 10)
    top, left = torch.tensor([0, 3]), torch.tensor([4, 1])
    out = crop_windows(padded, top, left, 6, 5)
    assert torch.equal(out[0], padded[0, :, 0:6, 4:9]) and torch.equal(out[1], padded[1, :, 3:9, 1:6])
    flipped = crop_windows(padded, top, left, 6, 5, flip=torch.tensor([True, False]))
    assert torch.equal(flipped[0], padded[0, :, 0:6, 4:9].flip(-1)) and torch.equal(flipped[1], out[1])


def test_random_crop_flip_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.randint(1, 256, (16, 3, 6, 6), dtype=torch.uint8)  # no zeros, so padding is recognisable
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        candidates = [w for t in range(5) for l in range(5)
                      for w in (padded[i, :, t:t + 6, l:l + 6], padded[i, :, t:t + 6, l:l + 6].flip(-1))]
        assert any(torch.equal(out[i], c) for c in candidates)


# ================================================================================================
# paths and the decode-once cache

def test_paths_follow_env_and_arguments(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache" and default_data_dir() == tmp_path / "no-data-here"
    monkeypatch.delenv("RTL_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "robust-transfer"
    make_cifar(tmp_path / "d", "cifar10")
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path / "d", progress=False)) == 12  # argument beats env


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_second_load_does_not_decode(tmp_path, kind):
    root = make_imagefolder(tmp_path, kind)
    first = load_dataset(f"imagefolder:{root}", progress=False)
    count = decode.DECODE_COUNT
    second = load_dataset(f"imagefolder:{root}:half-a", progress=False)
    third = load_dataset(f"imagefolder:{root}", progress=False)
    assert decode.DECODE_COUNT == count  # selection is applied to the cached full split
    assert torch.equal(first.images, third.images) and torch.equal(first.labels, third.labels)
    assert len(second) < len(first)
    files = [p for p in (tmp_path / "cache" / "decoded").iterdir() if p.is_dir()]
    assert len(files) == 1 and files[0].name.startswith("imagefolder-train-")


def test_cache_follows_content_changes(tmp_path):
    root = make_imagefolder(tmp_path, "dir")
    load_dataset(f"imagefolder:{root}", "test", progress=False)
    (root / "test/cat/t.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    os.utime(root / "test/cat/t.png", ns=(1, 1))  # a different mtime even on coarse clocks
    count = decode.DECODE_COUNT
    d = load_dataset(f"imagefolder:{root}", "test", progress=False)
    assert decode.DECODE_COUNT == count + 3 and d.images[0].sum() == 0


def test_corrupt_cache_is_rebuilt(tmp_path, capsys):
    root = make_imagefolder(tmp_path, "tar")
    first = load_dataset(f"imagefolder:{root}", progress=False)
    first_images = first.images.clone()  # (first.images maps the file this test truncates in place)
    (path,) = [p for p in (tmp_path / "cache" / "decoded").iterdir() if p.is_dir()]
    (path / "images.u8").write_bytes((path / "images.u8").read_bytes()[:100])  # truncated
    count = decode.DECODE_COUNT
    again = load_dataset(f"imagefolder:{root}", progress=False)
    assert decode.DECODE_COUNT == count + len(first) and torch.equal(again.images, first_images)
    assert "corrupt" in capsys.readouterr().err
    count = decode.DECODE_COUNT
    load_dataset(f"imagefolder:{root}", progress=False)
    assert decode.DECODE_COUNT == count  # the rebuilt file is valid


def _load_in_subprocess(spec: str, cache: str) -> tuple[str, int]:
    os.environ["RTL_CACHE_DIR"] = cache
    from robust_transfer.data import load_dataset as load
    d = load(spec, progress=False)
    return d.sha256(), len(d)


def test_two_processes_build_one_valid_cache(tmp_path):
    root = make_imagefolder(tmp_path, "tar")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_load_in_subprocess, [(f"imagefolder:{root}", str(tmp_path / "cache"))] * 2)
    assert results[0] == results[1]
    count = decode.DECODE_COUNT
    d = load_dataset(f"imagefolder:{root}", progress=False)
    assert decode.DECODE_COUNT == count and d.sha256() == results[0][0]
    assert len([p for p in (tmp_path / "cache" / "decoded").iterdir() if p.is_dir()]) == 1
    assert not list((tmp_path / "cache" / "decoded").glob("*.tmp"))


@pytest.mark.slow
def test_real_cifar10_jpeg(tmp_path):
    if not (REAL_DATA / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip(f"the real data is not at {REAL_DATA / 'cifar10-jpeg.tar.gz'}")
    times = []
    for _ in range(2):
        start = time.perf_counter()
        train = load_dataset("cifar10-jpeg", "train", data_dir=REAL_DATA, progress=False)
        test = load_dataset("cifar10-jpeg", "test", data_dir=REAL_DATA, progress=False)
        times.append(time.perf_counter() - start)
    assert (len(train), len(test)) == (50000, 10000)
    assert train.num_classes == 10 and train.classes[:3] == ("airplane", "automobile", "bird")
    assert train.images.shape[1:] == (3, 32, 32) and torch.bincount(test.labels).tolist() == [1000] * 10
    assert times[1] * 5 <= times[0], times


def test_loader_memory_format_and_host_copy_give_the_same_batches():
    d = ImageData(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.arange(10) % 2, ("a", "b"), "toy",
                  "train")
    ref = list(BatchLoader(d, 4, augment=True, seed=3))
    nhwc = list(BatchLoader(d, 4, augment=True, seed=3, memory_format=torch.channels_last, on_device=False))
    for (x, y), (x2, y2) in zip(ref, nhwc):
        assert x2.is_contiguous(memory_format=torch.channels_last) and x2.dtype == torch.float32
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_batch_loader_streams_from_pinned_host_memory_on_cuda_unless_asked_to_hold_the_set():
    """Issue 26: on CUDA the uint8 set stays in (pinned) host memory and batches are copied as they are asked
    for; `on_device=True` holds it on the card. On the CPU the images are used where they are."""
    d = ImageData(torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8), torch.arange(8) % 2, ("a", "b"), "t", "train")
    cpu = BatchLoader(d, 4)
    assert cpu.home == torch.device("cpu") and cpu.images.data_ptr() == d.images.data_ptr()   # no copy
    if not torch.cuda.is_available():
        return
    streamed, held = BatchLoader(d, 4, device="cuda"), BatchLoader(d, 4, device="cuda", on_device=True)
    assert streamed.home.type == "cpu" and streamed.images.is_pinned() and held.images.is_cuda
    for (xs, ys), (xh, yh) in zip(streamed, held):
        assert xs.is_cuda and torch.equal(xs, xh) and torch.equal(ys, yh)
