"""`retrain_blocks`: how robust are the deep features? (paper section 3, Fig. 1)

Take a (robust) source c(θ_r), split into blocks input → output (`model.blocks()`, head last; the
17 blocks of WRN-32-10 in Fig. 2). Re-initialise the k deepest blocks and re-train only them on
NATURAL examples of the same dataset, everything shallower frozen in eval mode:

    min_{θ_{B−k+1..B}}  CE( f_{B−k+1..B}( f_{1..B−k}(x; θ_r*) ), y )

then measure clean and PGD-20 accuracy. If robustness survives small k, it lives in the deep
features (the paper's finding). Paper defaults (at the top of config/transfer.py): momentum SGD,
lr 0.001, 20,000 iterations, with standard augmentation.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import RetrainBlocksConfig
from ..device import resolve_device
from ..errors import ConfigError, ModelError
from ..reporting import RunLogger
from .common import FastPath, freeze, on_device, set_modes
from .engine import Batch, Objective, StepOutput, Training, TrainingResult, default_checkpoint_dir, fit
from .source_model import Source, load_data, setup, source_lineage
from .validate import eval_threat, reported_metrics


def reinitialise(blocks, seed: int) -> None:
    """Fresh parameters (and BatchNorm statistics) for every layer in `blocks`, seeded."""
    torch.manual_seed(seed)
    for block in blocks:
        for m in block.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def check_k(k: int, model) -> None:
    n = len(model.blocks())
    if k > n:
        raise ConfigError(f"k={k} is larger than the number of blocks of {model.arch} ({n}, head included); "
                          f"allowed: 1..{n}")


class DeepBlocksLoss(Objective):
    """CE on natural examples through the frozen shallow blocks (no graph) and the re-trained deep ones."""

    def __init__(self, model, frozen, retrained):
        self.model, self.frozen, self.retrained = model, frozen, retrained

    def loss(self, batch: Batch, update: int) -> StepOutput:
        with torch.no_grad():  # frozen, shallower blocks: no graph needed through them
            h = self.model.normalize(batch.x)
            for b in self.frozen:
                h = b(h)
        for b in self.retrained:
            h = b(h)
        return StepOutput(F.cross_entropy(h, batch.y), h)


def retrain_blocks(cfg: RetrainBlocksConfig, k: int, logger: RunLogger, *, source: Source, run_id: str | None = None,
                   checkpoint_dir: str | Path | None = None) -> TrainingResult:
    """`source` (resolved by the command layer from cfg.source_model) with its k deepest blocks re-initialised in
    place (give each k its own copy) and re-trained."""
    s = setup(cfg, logger, source, data="dataset", seed=False)  # (reinitialise seeds)
    train = s.data.train
    if train.num_classes != source.model.num_classes:
        raise ModelError(f"dataset={train.spec!r} has {train.num_classes} classes but the source has "
                         f"{source.model.num_classes}; retrain_blocks re-trains on the source's own task "
                         "(use `transfer` or `lwf` for a new one)")
    model = source.model
    blocks = model.blocks()  # input → output, head last; their composition is the forward pass
    check_k(k, model)
    frozen, retrained = blocks[:-k], blocks[-k:]
    reinitialise(retrained, cfg.seed)
    for b in frozen:
        freeze(b)
    fast = FastPath.of(cfg, s.device, model.arch)   # precision, channels_last, compile
    model = on_device(model, s.device, fast)
    set_modes(model, frozen=frozen)  # the frozen part stays in eval mode: its BatchNorm statistics are θ_r*'s

    ckpt = (checkpoint_dir or cfg.checkpoint_dir
            or default_checkpoint_dir("retrain_blocks", f"{train.spec}-k{k}", run_id[:12] if run_id else None))
    training = Training("retrain_blocks", cfg, model, [p for b in retrained for p in b.parameters()], s.data, s.device,
                        fast, meta={"training": {"k": k, "blocks": len(blocks)}, "lineage": source_lineage(source, k=k)},
                        checkpoint_dir=ckpt, run_id=run_id,
                        desc=f"retrain k={k}")
    return fit(training, DeepBlocksLoss(model, frozen, retrained), logger)


def source_baseline(cfg: RetrainBlocksConfig, source: Source) -> dict[str, float]:
    """The source as it is (no block re-trained): Fig. 1's dashed line (`source`: unchanged)."""
    device = resolve_device(cfg.device)
    _, test = load_data(cfg.dataset, source, per_class=None, seed=cfg.seed, upsample=cfg.upsample,
                        data_dir=cfg.data_dir, progress=cfg.progress, param="dataset")
    return reported_metrics(source.model, test, eval_threat(cfg), eval_steps=cfg.eval_steps, n_examples=cfg.n_examples,
                            seed=cfg.eval_seed, device=device, progress=cfg.progress).metrics


def plot_robustness_vs_k(rows: dict[int, dict[str, float]], baseline: dict[str, float], path: str | Path,
                         *, title: str = "") -> Path:
    """Fig. 1: accuracy vs the number of re-trained deepest blocks; dashed: the source, all frozen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(rows)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    for name, color in ((n, c) for n, c in zip(sorted(baseline), ("tab:blue", "tab:red", "tab:green"))):
        ax.plot(ks, [rows[k][name] for k in ks], "o-", color=color, label=name.replace("_acc", ""))
        ax.axhline(baseline[name], color=color, linestyle="--", linewidth=1,
                   label=f"{name.replace('_acc', '')} (source, all frozen)")
    ax.set_xlabel("k (deepest blocks re-trained on natural examples)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.set_title(title or "robustness vs re-trained blocks", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
