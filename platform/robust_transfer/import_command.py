"""`import`: a published checkpoint (torchvision, robustness, RobustBench, or a state dict + key map)
becomes our checkpoint in one tracked run and a registered model (docs/importing.md).

    rtl import --file resnet50_l2_eps3.ckpt --format robustness --arch resnet50 --norm l2 --epsilon 3 \
        --register-as imagenet-resnet50-l2-eps3
    robust_transfer.import_model(file=..., format="torchvision", arch="resnet18", register_as="tv-resnet18")
"""
from __future__ import annotations

import math
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError, ModelError, check_range, one_of

IMPORT_NORMS = ("linf", "l2")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ImportConfig:
    """`import`: convert a published checkpoint into ours and register it."""

    file: str = ""
    format: str = ""                 # torchvision | robustness | robustbench | keymap
    arch: str = ""
    register_as: str = ""
    num_classes: int | None = None   # checked against the file's head when given
    epsilon: float | None = None     # the threat model the publisher trained for, recorded as given
    norm: str = "linf"               # linf (epsilon on the 0-255 scale) | l2 (epsilon in [0,1] pixel units)
    input_size: int | None = None    # default: 224 (torchvision, robustness), 32 (robustbench, keymap)
    key_map: str | None = None       # format=keymap: the YAML key map
    checkpoint_dir: str | None = None  # also keep the converted checkpoint here (default: only in MLflow)
    experiment: str = "robust-transfer"

    def __post_init__(self):
        from .importers import FORMATS

        if not self.file:
            raise ConfigError("file is required: the published checkpoint to import")
        if self.format not in FORMATS:
            raise ModelError(f"format={self.format!r} is not known; choose one of: {', '.join(FORMATS)}")
        if not self.arch:
            raise ModelError("arch is required (e.g. resnet50, wide_resnet50_2, wrn-28-10, preact-resnet18)")
        if not self.register_as or not _NAME.match(self.register_as):
            raise ConfigError(f"register_as={self.register_as!r} is not a valid model name; use letters, digits, "
                              f"'.', '_' or '-' (max 128)")
        if self.num_classes is not None:
            check_range("num_classes", self.num_classes, 2, 100_000)
        if self.norm not in IMPORT_NORMS:
            raise one_of("norm", self.norm, IMPORT_NORMS)
        if self.epsilon is not None:
            if not isinstance(self.epsilon, (int, float)) or not math.isfinite(self.epsilon):
                raise ConfigError(f"epsilon={self.epsilon!r} must be a finite number")
            check_range("epsilon", self.epsilon, 0.0, 255.0)
        if self.input_size is not None:
            check_range("input_size", self.input_size, 8, 1024)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def run_import(cfg: ImportConfig) -> dict:
    from .checkpoints import save_checkpoint
    from .commands import print_table, version_tags
    from .importers import convert
    from .tracking import log_checkpoint_model, register_checkpoint_model, tracked_run

    tags = {"rtl.import_format": cfg.format, "rtl.arch": cfg.arch}
    with tracked_run("import", cfg.to_params(), tags, experiment=cfg.experiment) as log, \
            tempfile.TemporaryDirectory(prefix="rtl-import-") as tmp:
        model, meta = convert(cfg.file, cfg.format, cfg.arch, num_classes=cfg.num_classes,
                              input_size=cfg.input_size, key_map=cfg.key_map)
        if cfg.epsilon is not None:
            meta["threat_model"] = {"norm": cfg.norm, "epsilon": cfg.epsilon, "as_given": True}
        meta["lineage"]["run_id"] = log.run_id
        checkpoint = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(tmp) / "checkpoint"
        save_checkpoint(checkpoint, model, meta)
        model_uri = log_checkpoint_model(checkpoint)
        full = {**meta, "arch": model.arch}
        mv = register_checkpoint_model(model_uri, cfg.register_as, version_tags(full, {}))
        log.set_tags({"rtl.registered_model": f"{cfg.register_as}/{mv.version}", "rtl.source_sha256": meta["lineage"]["sha256"]})
        rows = {"arch": model.arch, "num_classes": model.num_classes, "input_size": model.input_size,
                "sha256": meta["lineage"]["sha256"][:16], "model": f"models:/{cfg.register_as}/{mv.version}"}
        print_table(f"import ({cfg.format}) — run {log.run_id}", rows)
        return {"run_id": log.run_id, "model_uri": f"models:/{cfg.register_as}/{mv.version}",
                "registered_model": cfg.register_as, "version": mv.version, "meta": full}


def import_model(file: str, format: str, arch: str, register_as: str, **kwargs) -> dict:
    """Python API of `rtl import`: see ImportConfig for the parameters."""
    return run_import(ImportConfig(file=str(file), format=format, arch=arch, register_as=register_as, **kwargs))
