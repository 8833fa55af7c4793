"""`import`: convert a published checkpoint (torchvision, robustness, RobustBench, or a state dict +
YAML key map) into ours and register it (docs/importing.md)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..norms import MAX_EPSILON, NORMS
from ..errors import ConfigError, ModelError, check_range, one_of

FORMATS = ("torchvision", "robustness", "robustbench", "keymap")
IMPORT_NORMS = NORMS      # the threat models the platform evaluates and trains under (attacks/threat.py)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ImportConfig:
    """`import`: convert a published checkpoint into ours and register it."""

    ENTRY_POINT = "import"
    MLPROJECT_NAME = "import_model"   # (MLproject's name since it shipped)

    file: str = ""                   # the published checkpoint (.pth/.pt/.ckpt/.safetensors); never unpickled
    format: str = ""                 # the file's format (robustness: MadryLab's; keymap: a state dict and a YAML
                                     # key map, --key-map)
    arch: str = ""                   # our architecture the weights are loaded into
    register_as: str = ""            # the registered model name the import creates a version of
    num_classes: int | None = None   # classes of the model, checked against the file's head (default: the file's)
    epsilon: float | None = None     # the threat model the publisher trained for, recorded as given
    norm: str = "linf"               # the threat model's norm: linf (epsilon on the 0-255 scale) or l2 (epsilon
                                     # in [0,1] pixel units)
    input_size: int | None = None    # input side length in pixels (default: 224 for torchvision and robustness,
                                     # 32 for robustbench and keymap)
    key_map: str | None = None       # the YAML key map of format=keymap
    checkpoint_dir: str | None = None  # also keep the converted checkpoint here (default: only in MLflow)
    experiment: str = "robust-transfer"  # the MLflow experiment of the import's run

    def __post_init__(self):
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
            check_range("epsilon", self.epsilon, 0.0, MAX_EPSILON[self.norm])   # 0: a natural (ε = 0) source
        if self.input_size is not None:
            check_range("input_size", self.input_size, 8, 1024)

