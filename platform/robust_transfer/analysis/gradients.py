"""Input gradients of the loss (paper Fig. 5): display scaling, an alignment score, the grid. The gradients
themselves are `attacks.input_gradients` (`analyze.py` calls it with `fold_bn=False`: the model as given).

MLflow-free: `analyze.py` loads the models and data and logs what these return.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks.threat import to_pixels
from ..errors import DataError


def gradient_display(g: torch.Tensor) -> torch.Tensor:
    """Gradients as images in [0,1] for display: per image, g / max|g| mapped to [0,1] (0 → mid grey).

    Per-image (not per-channel) scaling, symmetric about zero: the sign and the relative weight of
    the colour channels survive, as in the paper's Fig. 5 (and Tsipras et al.). All-zero → grey.
    """
    scale = g.abs().flatten(1).amax(dim=1).clamp_min(torch.finfo(g.dtype).tiny).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * g / scale).clamp(0, 1)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def edge_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the grey-level image (mean of the channels): [N, H, W]."""
    grey = to_pixels(x).mean(dim=1, keepdim=True)
    k = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(grey)        # [2, 1, 3, 3]
    e = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k)            # [N, 2, H, W]
    return e.pow(2).sum(dim=1).sqrt()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of [N, P] tensors; 0 where either row is constant."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(dim=1) / den.clamp_min(1e-12)
    return torch.where(den > 1e-12, r, torch.zeros_like(r))


def perceptual_alignment(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image: Pearson correlation between the gradient's per-pixel magnitude ‖∇ₓ‖ (L2 over channels)
    and the image's Sobel edge magnitude, in [-1, 1] (0 for a constant image or a zero gradient).

    Interpretable, "perceptually aligned" gradients (robust sources) concentrate on object edges and
    score clearly above 0; the noise-like gradients of natural models score near 0.
    """
    mag = g.float().pow(2).sum(dim=1).sqrt().flatten(1)
    return _pearson(mag, edge_magnitude(x).flatten(1))


def _hwc(img: torch.Tensor):
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def gradient_grid_figure(images: torch.Tensor, rows: list[tuple[str, torch.Tensor]], *, title: str = "",
                         image_label: str = "images", cell: float = 1.3):
    """Fig. 5: the top row the images, then one row per model with its input gradients (`gradient_display`).

    `images`: [N, C, H, W] pixels in [0,1] (or uint8); `rows`: (label, gradients [N, C, h, w]) per model
    (each at its model's input size). Returns a matplotlib Figure (Agg canvas) with (1 + len(rows)) × N axes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    if n == 0:
        raise DataError("gradient_grid_figure needs at least one image")
    for label, g in rows:
        if len(g) != n:
            raise DataError(f"row {label!r} has {len(g)} gradients for {n} images")
    from .plots import FIGURE_DPI, fit_text, readable_label

    fig = Figure(figsize=(1.2 + cell * n, 0.3 + cell * (1 + len(rows))), dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(rows), n, squeeze=False)
    pix = to_pixels(images)
    shown = [(image_label, pix)] + [(readable_label(label), gradient_display(g.float())) for label, g in rows]
    for r, (label, imgs) in enumerate(shown):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(_hwc(imgs[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
        axes[r][0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(fit_text(fig, title, 9), fontsize=9)
    fig.tight_layout()
    return fig
