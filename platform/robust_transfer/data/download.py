"""`download=true`: fetch CIFAR-10, CIFAR-100 or Tiny-ImageNet from their public locations into the
data root, checked against their published md5 by torchvision's downloader.

    RTL_DATA_MIRROR=https://my.mirror/datasets   fetch <mirror>/<archive file name> instead
                                                  (cifar-10-python.tar.gz, cifar-100-python.tar.gz,
                                                  tiny-imagenet-200.zip); the md5 is checked all the same.

The archive is downloaded and extracted inside a temporary folder in the data root and only moved
into place once its checksum matched and it extracted whole: a failed or interrupted download
leaves nothing behind (no partial archive, no half-extracted folder).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import DataError

MIRROR_ENV = "RTL_DATA_MIRROR"
# name -> (public URL, md5 of the archive, the folder it extracts to)
ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 "cifar-100-python"),
    "tiny-imagenet": ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
                      "tiny-imagenet-200"),
}
DOWNLOADABLE = tuple(ARCHIVES)


def url_for(name: str) -> str:
    url = ARCHIVES[name][0]
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[1]}" if mirror else url


def download(name: str, data_dir: Path) -> Path:
    """Fetch `name` into `data_dir` (nothing is done if its folder is there); the folder it extracted to."""
    from torchvision.datasets.utils import download_and_extract_archive

    if name not in ARCHIVES:
        raise DataError(f"{name} has no public download; downloadable: {', '.join(DOWNLOADABLE)}")
    _, md5, folder = ARCHIVES[name]
    url = url_for(name)
    final = Path(data_dir) / folder
    if final.exists():
        return final
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=data_dir))
    except OSError as e:
        raise DataError(f"{name}: cannot write into the data root {data_dir}: {e.strerror or e}") from None
    try:
        print(f"downloading {name} from {url} into {data_dir}", flush=True)
        try:
            download_and_extract_archive(url, download_root=str(tmp), md5=md5, remove_finished=True)
        except Exception as e:  # network, HTTP status, checksum ("File not found or corrupted."), disk, bad archive
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "corrupted" in first or "md5" in first.lower():
                first = f"the file's md5 is not the published {md5} (corrupted or not the {name} archive)"
            raise DataError(f"{name}: download from {url} failed: {first}; nothing was kept in {data_dir}") from None
        if not (tmp / folder).is_dir():
            raise DataError(f"{name}: the archive from {url} has no {folder}/ folder; nothing was kept in {data_dir}")
        try:
            os.rename(tmp / folder, final)  # atomic: readers see no folder or the whole one
        except OSError:
            if not final.is_dir():  # (another process may have put it there first: then theirs is used)
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
