"""Feature cache: a frozen extractor's z(x) for a whole dataset, computed once and stored.

Eq. 2 trains only the head w on top of z(x, θ*). With θ* frozen (eval mode) and no augmentation,
z(x, θ*) of a training image never changes, so recomputing it every epoch wastes (epochs − 1) of
every `epochs` forward passes. We compute it once, keyed by everything that determines it — the
extractor's weights and normalisation, the data's spec, split and content hash, and the pixel
transform — and keep it under `cache_dir()/features/` as safetensors. `transfer` runs, search
trials and `lwf`'s stored teacher features z0(x, θ_r*) (the paper's offline trick) all share it.

Writes are atomic (temp file + os.replace) under a file lock, so parallel trials build a file once
and never read a partial one; a file that does not load is rebuilt.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..data import ImageData, cache_dir
from ..data.cache import ReleasingReader
from ..io import atomic_write
from ..progress import bar_disabled
from .common import memory_format_for

FORMAT_VERSION = 1
# How many times this process ran an extractor over a dataset (cache misses). Tests use it to
# prove that a second run, or lwf after transfer, reads the stored features instead.
FEATURE_COMPUTATIONS = 0


def extractor_sha256(model: torch.nn.Module) -> str:
    """Content hash of everything `model.features` depends on: all tensors except the head's."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name.startswith("head."):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def feature_path(model: torch.nn.Module, data: ImageData, transform: str) -> Path:
    key = "|".join([f"v{FORMAT_VERSION}", extractor_sha256(model), data.spec, data.split, data.sha256(), transform])
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{getattr(model, 'arch', 'model')}-{data.split}")
    return cache_dir() / "features" / f"{safe}-{digest}.safetensors"


@torch.no_grad()
def compute_features(model: torch.nn.Module, images: torch.Tensor, *, device, batch_size: int = 256,
                     progress: bool = True, desc: str = "features") -> torch.Tensor:
    """z(x) for uint8 images [N,3,H,W] (pixels = images/255), eval mode, as float32 [N, D] on the CPU."""
    global FEATURE_COMPUTATIONS
    FEATURE_COMPUTATIONS += 1
    was_training = [(m, m.training) for m in model.modules()]
    fmt = memory_format_for(getattr(model, "arch", ""))
    model.eval()  # BatchNorm uses its running statistics: z(x) of one image, not of its batch
    try:
        out = []
        pages = ReleasingReader(images)
        for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=bar_disabled(progress), leave=False):
            x = images[i:i + batch_size].to(device).float().div_(255)
            pages.touched(x.numel())
            out.append(model.features(x.contiguous(memory_format=fmt)).float().cpu())
        return torch.cat(out)
    finally:
        for m, flag in was_training:
            m.training = flag


def _read(path: Path, n: int) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            z = f.get_tensor("features")
        if z.dtype == torch.float32 and z.dim() == 2 and z.shape[0] == n and torch.isfinite(z).all():
            return z
    except Exception:  # safetensors raises its own error types for truncated/corrupt files
        pass
    print(f"warning: cached features {path} are corrupt; rebuilding them", file=sys.stderr)
    return None


def _write(path: Path, z: torch.Tensor, meta: dict[str, str]) -> None:
    # readers see no file or the whole file, never a partial one
    atomic_write(path, lambda tmp: save_file({"features": z.contiguous()}, tmp, metadata=meta))


def cached_features(model: torch.nn.Module, data: ImageData, *, device, transform: str = "pixels/255",
                    batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """z(x) of every image of `data` (as given: subset and resize already applied), from the cache
    when present, else computed once and stored. `transform` names any further pixel transform."""
    path = feature_path(model, data, transform)
    if (z := _read(path, len(data))) is not None:
        return z
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file() and (z := _read(path, len(data))) is not None:  # built while we waited
            return z
        z = compute_features(model, data.images, device=device, batch_size=batch_size, progress=progress,
                             desc=f"features of {data.spec}:{data.split}")
        try:
            _write(path, z, {"spec": data.spec, "split": data.split, "data_sha256": data.sha256(),
                             "transform": transform, "format_version": str(FORMAT_VERSION)})
        except OSError as e:  # a full or read-only cache only costs a recomputation next time
            print(f"warning: cannot write the feature cache {path} ({e})", file=sys.stderr)
        return z
