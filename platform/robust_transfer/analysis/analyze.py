"""What `analyze` computes (the entry point is commands/analyze.py): load the models and the data, compute, log
through the given `RunLogger`.

    what=gradients         Fig. 5: gradients.png (images, then one row of ∇ₓ CE per model), gradients.csv,
                           metrics grad_edge_corr_<label>, grad_l2_mean_<label>
    what=feature-distance  Fig. 7: feature_distance.png (histogram of ‖z(x) − z(x_aug)‖₂), feature_distance.csv,
                           metrics feature_distance_mean/_median, feature_norm_mean, feature_distance_between_images_mean
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..attacks import input_gradients
from ..config import ANALYZE_DEFAULT_N_IMAGES, AnalyzeConfig
from ..data import ImageData, load_dataset
from ..data.transforms import resize_uint8
from ..device import resolve_device
from ..digests import indices_sha256
from ..errors import ConfigError, ModelError
from ..evaluation.inputs import select_examples
from ..progress import bar_disabled
from .feature_distance import feature_distance_figure, feature_distance_summary, feature_distance_title
from .gradients import gradient_grid_figure, perceptual_alignment


def metric_keys(labels: list[str]) -> list[str]:
    """Labels as parts of MLflow metric names: letters, digits, '_', '-', '.'; unique (suffix _2, _3...)."""
    keys: list[str] = []
    for label in labels:
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.")[:180] or "model"
        base, i = key, 2
        while key in keys:
            key, i = f"{base}_{i}", i + 1
        keys.append(key)
    return keys


def _load(uri: str):
    from ..tracking.models import load_model_with_meta

    model, meta = load_model_with_meta(uri)
    return model, meta


def _input_size(model, meta: dict, uri: str) -> int:
    size = getattr(model, "input_size", None) or meta.get("input_size")
    if not size:
        raise ModelError(f"model {uri!r} records no input_size; give a robust-transfer checkpoint")
    return int(size)


def _load_data(cfg: AnalyzeConfig, meta: dict) -> ImageData:
    spec = cfg.dataset or meta.get("data_spec")
    if not spec:
        raise ConfigError("dataset is required: the model's metadata records none")
    return load_dataset(spec, cfg.split, data_dir=cfg.data_dir, progress=cfg.progress)


def _chosen(cfg: AnalyzeConfig, data: ImageData) -> torch.Tensor:
    """The seeded subset of the split (a prefix of one permutation: more images keep the first ones)."""
    n = cfg.n_images
    if n is None:
        n = min(ANALYZE_DEFAULT_N_IMAGES[cfg.what], len(data))
    elif n > len(data):
        raise ConfigError(f"n_images={n} is larger than the {cfg.split} split of {data.spec} ({len(data)} images)")
    if cfg.what == "feature-distance" and n < 2:
        raise ConfigError(f"the {cfg.split} split of {data.spec} has {len(data)} image(s); feature-distance needs 2")
    return select_examples(len(data), n, cfg.seed)


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    return resize_uint8(images, size) if images.shape[-1] != size or images.shape[-2] != size else images


def _tex_safe(text: str) -> str:
    return str(text).replace("$", r"\$")   # matplotlib would read $...$ in a path or URI as math


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def analyze_gradients(cfg: AnalyzeConfig, log, out_dir: Path) -> dict[str, float]:
    uris, labels = cfg.models(), cfg.label_list()
    loaded = [_load(uri) for uri in uris]              # every model, before any data is read or computed
    data = _load_data(cfg, loaded[0][1])
    for uri, (model, meta) in zip(uris, loaded):
        n_cls = getattr(model, "num_classes", None) or meta.get("num_classes")
        if n_cls != data.num_classes:
            raise ModelError(f"model {uri!r} has {n_cls} classes but dataset={data.spec!r} has {data.num_classes}; "
                             "the cross-entropy gradient needs the labels the model was trained on: give the "
                             "dataset it was trained (or transferred) on")
        _input_size(model, meta, uri)
    idx, sub = _images(cfg, data, log)
    dev = resolve_device(cfg.device)
    keys = metric_keys(labels)
    metrics: dict[str, float] = {}
    rows, grid_rows = [], []
    for uri, label, key, (model, meta) in tqdm(list(zip(uris, labels, keys, loaded)), desc="input gradients",
                                              unit="model", disable=bar_disabled(cfg.progress), leave=False):
        x = _at_size(sub.images, _input_size(model, meta, uri)).float().div_(255)
        # the model as given (fold_bn=False): Fig. 5 shows its own gradients, not the attack's folded view's
        g = input_gradients(model.to(dev), x, sub.labels, batch_size=cfg.batch_size, device=dev, fold_bn=False)
        align = perceptual_alignment(g, x)
        l2 = g.flatten(1).norm(dim=1)
        linf = g.flatten(1).abs().amax(dim=1)
        metrics[f"grad_edge_corr_{key}"] = align.mean().item()
        metrics[f"grad_l2_mean_{key}"] = l2.mean().item()
        grid_rows.append((_tex_safe(label if len(label) <= 28 else "…" + label[-27:]), g))
        for j in range(len(idx)):
            y = int(sub.labels[j])
            rows.append([label, key, uri, int(idx[j]), y, data.classes[y], f"{l2[j].item():.6g}",
                         f"{linf[j].item():.6g}", f"{align[j].item():.6f}"])
        model.cpu()
    log.log_metrics(metrics)
    cols = cfg.grid_columns(len(idx))   # the picture shows the first images; the numbers are over all of them
    shown = f" (first {cols} of {len(idx)} images)" if cols < len(idx) else ""
    fig = gradient_grid_figure(sub.images[:cols], [(label, g[:cols]) for label, g in grid_rows],
                               title=_tex_safe(f"∇ₓ loss on {data.spec}:{cfg.split}{shown}"))
    fig.savefig(out_dir / "gradients.png")
    _write_csv(out_dir / "gradients.csv", ["model_label", "metric_key", "model", "image_index", "label", "class",
                                           "grad_l2", "grad_linf", "grad_edge_corr"], rows)
    log.log_artifact(out_dir / "gradients.png")
    log.log_artifact(out_dir / "gradients.csv")
    return metrics


def _images(cfg: AnalyzeConfig, data, log):
    """The seeded images to analyse, recorded on the run (data, its hash, which images)."""
    idx = _chosen(cfg, data)
    log.set_tags({"rtl.data": data.spec, "rtl.data_sha256": data.sha256(), "rtl.analyze_indices_sha256": indices_sha256(idx)})
    if cfg.n_images is None:
        log.log_params({"n_images": len(idx)})
    return idx, data.subset(idx)


def analyze_feature_distance(cfg: AnalyzeConfig, log, out_dir: Path) -> dict[str, float]:
    (uri,) = cfg.models()
    model, meta = _load(uri)
    if not callable(getattr(model, "features", None)):
        raise ModelError(f"model {uri!r} has no features(x) (penultimate representation)")
    size = _input_size(model, meta, uri)
    data = _load_data(cfg, meta)
    idx, sub = _images(cfg, data, log)
    dev = resolve_device(cfg.device)
    res = feature_distance_summary(model.to(dev), sub.images, cfg.seed, batch_size=cfg.batch_size, device=dev,
                                   resize=size if data.image_size != size else None, progress=cfg.progress)
    metrics = res.metrics()
    log.log_metrics(metrics)
    fig = feature_distance_figure(res, title=feature_distance_title(uri, f"{data.spec}:{cfg.split}", len(idx)))
    fig.savefig(out_dir / "feature_distance.png")
    rows = [[int(idx[j]), int(sub.labels[j]), f"{res.distances[j].item():.6g}", f"{res.feature_norms[j].item():.6g}",
             int(idx[int(res.partners[j])]), f"{res.between_images[j].item():.6g}"] for j in range(len(idx))]
    _write_csv(out_dir / "feature_distance.csv", ["image_index", "label", "distance_to_augmented", "feature_norm",
                                                  "partner_index", "distance_to_partner"], rows)
    log.log_artifact(out_dir / "feature_distance.png")
    log.log_artifact(out_dir / "feature_distance.csv")
    return metrics
