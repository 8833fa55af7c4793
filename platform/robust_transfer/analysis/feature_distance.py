"""‖z(x) − z(x_aug)‖₂ over a split (paper appendix B, Fig. 7): is the feature of an augmented image
close to the un-augmented one (so LwF could store z0 of un-augmented images)?

x_aug is the platform's standard augmentation (`data.transforms.random_crop_flip`: pad-4 random crop +
horizontal flip, applied before any resize as `BatchLoader` does), seeded. MLflow-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.threat import to_pixels
from ..data.transforms import random_crop_flip, resize_uint8
from ..errors import DataError, ModelError
from ..models.modes import eval_mode
from ..progress import bar_disabled


@dataclass
class FeatureDistanceResult:
    distances: torch.Tensor        # [N] ‖z(x_i) − z(aug(x_i))‖₂
    feature_norms: torch.Tensor    # [N] ‖z(x_i)‖₂
    between_images: torch.Tensor   # [N] ‖z(x_i) − z(x_j)‖₂ for a random partner j ≠ i (NaN when N = 1)
    partners: torch.Tensor         # [N] the partner index j of each i

    def metrics(self) -> dict[str, float]:
        return {"feature_distance_mean": self.distances.mean().item(),
                "feature_distance_median": self.distances.median().item(),
                "feature_norm_mean": self.feature_norms.mean().item(),
                "feature_distance_between_images_mean": self.between_images.mean().item()}


def _prepare(x: torch.Tensor, resize: int | None) -> torch.Tensor:
    if resize is not None:
        if x.dtype != torch.uint8:
            raise DataError("resize needs uint8 images")
        x = resize_uint8(x, resize)
    return to_pixels(x)


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256, device=None,
                     resize: int | None = None, progress: bool = False, desc: str = "features") -> torch.Tensor:
    """z(x) = model.features(x) for every image ([N, D], float32, CPU), in eval mode (every module's mode restored)."""
    if not callable(getattr(model, "features", None)):
        raise ModelError("the model has no features(x) (penultimate representation); give a robust-transfer model")
    dev = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    out = []
    with eval_mode(model):
        for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=bar_disabled(progress), leave=False):
            xb = _prepare(images[i:i + batch_size].to(dev), resize)
            out.append(model.features(xb).flatten(1).float().cpu())
    return torch.cat(out)


def augment(images: torch.Tensor, seed: int, pad: int = 4) -> torch.Tensor:
    """The standard augmentation of every image, drawn from a CPU generator seeded by `seed`; the whole
    set at once, so the result does not depend on any batch size."""
    return random_crop_flip(images, torch.Generator().manual_seed(int(seed)), pad=pad)


def random_partners(n: int, seed: int) -> torch.Tensor:
    """A partner j ≠ i for every i (i → the next index in a seeded permutation, cyclically)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 1))
    partners = torch.empty(n, dtype=torch.long)
    partners[perm] = perm.roll(-1)
    return partners


def feature_distance_summary(model: nn.Module, images: torch.Tensor, seed: int = 0, *, batch_size: int = 256,
                             device=None, resize: int | None = None, pad: int = 4,
                             progress: bool = False) -> FeatureDistanceResult:
    """Distances between the features of each image and of its augmented copy, plus for scale the
    feature norms and the distance to the features of a random *other* image. `images`: uint8 (or float
    pixels in [0,1]) [N, 3, H, W] at their native size; `resize` then brings both copies to the model's
    input size (augment first, then resize, as the platform's loader does)."""
    if images.dim() != 4 or len(images) == 0:
        raise DataError(f"images must be a non-empty tensor [N, C, H, W]; got {list(images.shape)}")
    kw = dict(batch_size=batch_size, device=device, resize=resize, progress=progress)
    z = extract_features(model, images, desc="features (x)", **kw)
    za = extract_features(model, augment(images, seed, pad), desc="features (augmented)", **kw)
    n = len(images)
    partners = random_partners(n, seed) if n > 1 else torch.zeros(1, dtype=torch.long)
    between = (z - z[partners]).norm(dim=1) if n > 1 else torch.full((1,), float("nan"))
    return FeatureDistanceResult((z - za).norm(dim=1), z.norm(dim=1), between, partners)


def feature_distances(model: nn.Module, images: torch.Tensor, seed: int = 0, **kwargs) -> torch.Tensor:
    """[N] ‖z(x) − z(x_aug)‖₂ with the standard augmentation seeded by `seed` (see feature_distance_summary)."""
    return feature_distance_summary(model, images, seed, **kwargs).distances


def feature_distance_title(model: str, data: str, n: int) -> str:
    """The figure's title: who (the model as a person reads it, never a suite's internal alias), on what
    data, how many images; the quantity on a line of its own."""
    from .plots import readable_label

    safe = lambda t: str(t).replace("$", r"\$")  # noqa: E731  (matplotlib would read $...$ in a path as math)
    return f"{safe(readable_label(model))} on {safe(data)} (n={n})\n" + r"$\|z(x) - z(x_{aug})\|_2$"


def feature_distance_figure(result: FeatureDistanceResult, *, title: str = "", bins: int = 40):
    """Fig. 7: histogram of ‖z(x) − z(x_aug)‖₂ with its mean (and, for scale, the mean distance between
    different images' features) marked. Returns a matplotlib Figure (Agg canvas); the title is wrapped to
    the figure's width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import FIGURE_DPI, fit_text

    d = result.distances.numpy()
    m = result.metrics()
    fig = Figure(figsize=(5.5, 3.8), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.hist(d, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(m["feature_distance_mean"], color="tab:red", linewidth=1.5,
               label=f"mean {m['feature_distance_mean']:.3g}")
    between = m["feature_distance_between_images_mean"]
    if between == between:  # not NaN
        ax.axvline(between, color="tab:gray", linestyle="--", linewidth=1,
                   label=f"mean between different images {between:.3g}")
    ax.set_xlabel(r"$\|z(x) - z(x_{aug})\|_2$")
    ax.set_ylabel("images")
    fig.suptitle(fit_text(fig, title or "feature distance: image vs augmented image", 9), fontsize=9)
    ax.legend(fontsize=7)
    return fig
