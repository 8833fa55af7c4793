"""`retrain_blocks`: how robust are the deep features? (paper section 3, Fig. 1)

Take a (robust) source c(θ_r), split into blocks input → output (`model.blocks()`, head last; the
17 blocks of WRN-32-10 in Fig. 2). Re-initialise the k deepest blocks and re-train only them on
NATURAL examples of the same dataset, everything shallower frozen in eval mode:

    min_{θ_{B−k+1..B}}  CE( f_{B−k+1..B}( f_{1..B−k}(x; θ_r*) ), y )

then measure clean and PGD-20 accuracy. If robustness survives small k, it lives in the deep
features (the paper's finding). Paper defaults: momentum SGD, lr 0.001, 20,000 iterations, with
standard augmentation.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import BatchLoader
from ..device import resolve_device
from ..errors import ConfigError, ModelError
from ..reporting import RunLogger
from .common import Budget, FastPath, freeze, lr_at, make_sgd
from .source import (Source, StrategyResult, default_checkpoint_dir, drop_last, final_evaluation, finish,
                     input_format, load_data, load_source, on_device, set_modes, setup, source_lineage, tag_run,
                     train_loop)
from .validate import Validator, eval_threat

# The paper's settings (section 3, footnote 3), the `retrain_blocks` entry point's defaults
# (config/transfer.py takes them from here; every one can be overridden: `rtl retrain-blocks --lr 0.01`, ...).
DEFAULTS = dict(
    lr=0.001,            # momentum SGD, lr 0.001,
    iterations=20_000,   # 20,000 iterations
    augment=True,        # footnote 3: standard augmentation
)



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


def retrain_blocks(cfg, k: int, logger: RunLogger, *, run_id: str | None = None,
                   checkpoint_dir: str | Path | None = None, source: Source | None = None) -> StrategyResult:
    """`cfg`: a config.RetrainBlocksConfig; `source`: the source model if the caller loaded it already (else `cfg.source_model` is loaded); its
    k deepest blocks are re-initialised in place (give each k its own copy)."""
    s = setup(cfg, logger, source=source, data="dataset", seed=False)  # (reinitialise seeds)
    device, source, train, val, test = s.device, s.source, s.train, s.val, s.test
    if train.num_classes != source.model.num_classes:
        raise ModelError(f"dataset={train.spec!r} has {train.num_classes} classes but the source has "
                         f"{source.model.num_classes}; retrain_blocks re-trains on the source's own task "
                         "(use `transfer` or `lwf` for a new one)")
    tag_run(logger, source, train)

    model = source.model
    blocks = model.blocks()  # input → output, head last; their composition is the forward pass
    check_k(k, model)
    frozen, retrained = blocks[:-k], blocks[-k:]
    reinitialise(retrained, cfg.seed)
    for b in frozen:
        freeze(b)
    fast = FastPath.of(cfg, device, model.arch)   # precision, channels_last, compile
    model = on_device(model, device, fast)
    fmt = input_format(model, fast)
    set_modes(model, frozen=frozen)  # the frozen part stays in eval mode: its BatchNorm statistics are θ_r*'s

    def forward(x):
        with torch.no_grad():  # frozen, shallower blocks: no graph needed through them
            h = model.normalize(x)
            for b in frozen:
                h = b(h)
        for b in retrained:
            h = b(h)
        return h

    opt = make_sgd([p for b in retrained for p in b.parameters()], cfg.lr, cfg.momentum, cfg.weight_decay)
    loader = BatchLoader(train, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed, device=device,
                         drop_last=drop_last(len(train), cfg.batch_size))
    budget = Budget.of(cfg.epochs, cfg.iterations, len(loader))
    milestones = cfg.milestone_fractions()

    def batches(epoch):
        loader.set_epoch(epoch)
        return iter(loader)

    def update(batch, step):
        x, y = batch  # natural examples only
        logits = forward(x.contiguous(memory_format=fmt))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach(), y

    validate = Validator(model, val, eval_threat(cfg), seed=cfg.seed, device=device)
    updates = train_loop(budget, batches, update, opt=opt, logger=logger, progress=cfg.progress, validate=validate,
                         desc=f"retrain k={k}", fast=fast, model=model,
                         lr_for=lambda step: lr_at(step, budget.total_updates, cfg.lr, cfg.schedule, milestones))
    meta = {"training": {"strategy": "retrain_blocks", "k": k, "blocks": len(blocks), "updates": updates,
                         "seed": cfg.seed},
            "lineage": source_lineage("retrain_blocks", source, run_id, k=k)}
    ckpt = (checkpoint_dir or cfg.checkpoint_dir
            or default_checkpoint_dir("retrain_blocks", train.spec, run_id, f"-k{k}"))
    return finish(model, test, train, cfg, logger, meta=meta, checkpoint_dir=Path(ckpt), threat=None, val=validate.last,
                  device=device)


def source_baseline(cfg, source: Source | None = None) -> dict[str, float]:
    """The source as it is (no block re-trained): Fig. 1's dashed line (`cfg`: a config.RetrainBlocksConfig;
    `source`: loaded already, unchanged)."""
    device = resolve_device(cfg.device)
    source = source if source is not None else load_source(cfg.source_model)
    _, test = load_data(cfg.dataset, source, per_class=None, seed=cfg.seed, upsample=cfg.upsample,
                        data_dir=cfg.data_dir, progress=cfg.progress, param="dataset")
    metrics, _ = final_evaluation(source.model, test, eval_threat(cfg),
                                  eval_steps=cfg.eval_steps, n_examples=cfg.n_examples, seed=cfg.seed,
                                  device=device, progress=cfg.progress)
    return metrics


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
