"""`analyze`, `report` and `suite`: the configuration of analyses, reports and paper suites."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import ClassVar

from ..data.spec import parse_spec
from ..device import check_device
from ..errors import ConfigError, check_range, one_of
from .common import _NAME, MODEL_URI_HELP, _check_positive_int, check_experiment, check_seed

_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5})$")
ANALYSES = ("gradients", "feature-distance")
ANALYZE_DEFAULT_N_IMAGES = {"gradients": 8, "feature-distance": 1000}  # feature-distance: capped at the split
ANALYZE_MAX_GRID_IMAGES = 64   # columns of the gradient grid at most
ANALYZE_DEFAULT_GRID_IMAGES = 8  # columns shown by default: the measured images can be many more (a claim needs them)
ANALYZE_MAX_MODELS = 16        # rows of the gradient grid (besides the images)
def _comma_list(text) -> list[str]:
    return [s.strip() for s in str(text or "").split(",")]


@dataclass
class AnalyzeConfig:
    """`analyze` (Fig. 5, Fig. 7 / appendix B): input-gradient images of one or more models, or the distance
    between the features of images and of their augmented copies."""

    ENTRY_POINT = "analyze"
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "test")

    what: str = "gradients"            # what to compute: input gradients (Fig. 5) or feature distances (Fig. 7)
    model: str = ""                    # the model: a URI or checkpoint path; gradients: a comma list, one grid row each
    labels: str = ""                   # row labels, one per model (comma list); default: the model URIs
    dataset: str = ""                  # the images, a dataset spec (default: the one recorded in the (first) model's
                                       # metadata)
    split: str = "test"                # the split the images come from
    n_images: int | None = None        # images analysed (default: 8 for gradients; 1000, or the whole split if
                                       # smaller, for feature-distance)
    grid_images: int | None = None     # gradients: the first this many analysed images are the picture's columns
                                       # (default: n_images, at most 8); the metrics and the CSV cover all n_images
    seed: int = 0                      # which images, and the augmentation's randomness
    batch_size: int = 128              # images per batch
    device: str = "auto"               # where to run (auto: cuda when available)
    experiment: str = "robust-transfer"  # the MLflow experiment of the run
    data_dir: str | None = None        # where datasets are read and unpacked (default: $RTL_DATA_DIR, else
                                       # ../shared/data when it exists, else ~/.cache/robust-transfer/data)
    progress: bool = True              # show progress bars

    def __post_init__(self):
        self.model, self.labels, self.dataset = self.model or "", self.labels or "", self.dataset or ""
        if self.what not in ANALYSES:
            raise one_of("what", self.what, ANALYSES)
        if not self.model.strip():
            raise ConfigError(f"model is required: {MODEL_URI_HELP} (what=gradients: a comma list of them)")
        models = self.models()
        if any(not m for m in models):
            raise ConfigError(f"model={self.model!r} has an empty entry; give a comma list of {MODEL_URI_HELP}")
        if self.what == "feature-distance" and len(models) != 1:
            raise ConfigError(f"what=feature-distance takes exactly one model; model={self.model!r} names {len(models)}")
        if len(models) > ANALYZE_MAX_MODELS:
            raise ConfigError(f"model={self.model!r} names {len(models)} models; at most {ANALYZE_MAX_MODELS} rows fit a grid")
        if self.labels:
            labels = _comma_list(self.labels)
            if len(labels) != len(models):
                raise ConfigError(f"labels={self.labels!r} gives {len(labels)} label(s) for {len(models)} models; "
                                  "give one label per model (comma list), or none")
            if any(not s for s in labels):
                raise ConfigError(f"labels={self.labels!r} has an empty label; give one non-empty label per model")
            if len(set(labels)) != len(labels):
                raise ConfigError(f"labels={self.labels!r} repeats a label; give each model its own")
        if self.dataset:
            parse_spec(self.dataset)
        if self.split not in self.SPLITS:
            raise one_of("split", self.split, self.SPLITS)
        if self.n_images is not None:
            if not isinstance(self.n_images, int) or isinstance(self.n_images, bool):
                raise ConfigError(f"n_images={self.n_images!r} must be a whole number")
            # gradients: any number measured (the picture shows `grid_images` of them); a distance to a
            # *different* image needs two
            check_range("n_images", self.n_images, 1 if self.what == "gradients" else 2, 10**7)
        if self.grid_images is not None:
            if not isinstance(self.grid_images, int) or isinstance(self.grid_images, bool):
                raise ConfigError(f"grid_images={self.grid_images!r} must be a whole number")
            if self.what != "gradients":
                raise ConfigError(f"grid_images={self.grid_images} is for what=gradients (the picture's columns); "
                                  f"what={self.what} draws no grid")
            check_range("grid_images", self.grid_images, 1, ANALYZE_MAX_GRID_IMAGES)
            if self.n_images is not None and self.grid_images > self.n_images:
                raise ConfigError(f"grid_images={self.grid_images} is more than n_images={self.n_images}; the grid "
                                  "shows some of the analysed images")
        check_seed("seed", self.seed)
        check_experiment(self.experiment)
        _check_positive_int("batch_size", self.batch_size, 65_536)
        check_device(self.device)

    def models(self) -> list[str]:
        return _comma_list(self.model)

    def grid_columns(self, n_analysed: int) -> int:
        """How many of the `n_analysed` images the gradient grid shows."""
        return min(n_analysed, self.grid_images or ANALYZE_DEFAULT_GRID_IMAGES)

    def label_list(self) -> list[str]:
        """One label per model: the given ones, else the model URIs/paths."""
        return _comma_list(self.labels) if self.labels else self.models()

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k not in ("progress", "data_dir")}


REPORT_SUFFIXES = (".yaml", ".yml")


@dataclass
class ReportConfig:
    """`report`: the tables and figures of a projects/*.yaml suite, from its newest FINISHED step runs."""

    ENTRY_POINT = "report"

    project: str = ""                  # the suite: a YAML file, or the name of a shipped one
    scale: str = "cpu"                 # one of the suite's `scales` (checked when the suite is read)
    out: str = "docs/results"          # the folder written: <out>/<scale>/<table or figure>.{md,csv,png} and index.md
    experiment: str = ""               # select runs from this experiment only (default: all experiments);
                                       # the report's own run is logged there too (or in robust-transfer)

    def __post_init__(self):
        from pathlib import Path

        from ..resources import resolve

        if not self.project:
            raise ConfigError("project is required: a suite YAML, e.g. projects/table2.yaml")
        self.project = resolve("projects", self.project)  # a file, or a shipped suite by name (table2)
        path = Path(self.project)
        if path.suffix.lower() not in REPORT_SUFFIXES:
            raise ConfigError(f"project={self.project!r} is not a suite YAML; give a .yaml or .yml file, "
                              "e.g. projects/table2.yaml")
        if not path.is_file():
            raise ConfigError(f"project={self.project!r} does not exist (or is not a file); "
                              "give a suite YAML, e.g. projects/table2.yaml")
        if not self.scale:
            raise ConfigError("scale is required: one of the suite's `scales`, e.g. cpu or paper")
        if not isinstance(self.scale, str) or not _NAME.match(self.scale):
            raise ConfigError(f"scale={self.scale!r} is not a scale name; give one of the suite's `scales`, e.g. cpu")
        if not self.out:
            raise ConfigError("out is required: the folder for the results, e.g. docs/results")
        check_experiment(self.experiment, allow_empty=True)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


SUITE_REUSE = ("exact", "params", "never")


@dataclass
class SuiteConfig:
    """`suite`: run a projects/*.yaml (a paper table/figure) as child runs, reusing finished steps, then `report`."""

    ENTRY_POINT = "suite"

    project: str = ""                  # the suite (a paper table or figure): a YAML file, or the name of a shipped one
    scale: str = "cpu"                 # one of the suite's `scales`, e.g. cpu or paper
    reuse: str = "exact"               # which finished step runs count as done: exact, same entry, parameters and
                                       # code version; params, any code version; never
    only: str = ""                     # run only these steps (comma list) and what they need; no report
    dry_run: bool = False              # print the plan (steps, keys, parameters; each claim's smallest detectable
                                       # difference at the planned sample sizes) and stop
    priors: str = ""                   # dry_run: accuracies to size the claims with, a report's CSV or folder
                                       # (e.g. docs/results/cpu; default p = 0.5, the largest standard error)
    report: bool = True                # end with the `report` step
    out: str = "docs/results"          # where `report` writes <scale>/<table>.md|csv|png
    experiment: str = "robust-transfer"  # the MLflow experiment of the suite's runs
    set: str = ""                      # scale variables, e.g. set="imagenet_robust=models:/imagenet-robust-r50/1" (a scale's `requires:`)
    workers: int = 1                   # steps at once: 1 runs them in order here; N > 1 runs steps whose inputs are
                                       # ready as Ray tasks (needs a tracking server, not a sqlite file)
    ray_address: str = ""              # workers > 1: an existing Ray cluster (auto, ray://host:10001, host:6379);
                                       # default a local one with `workers` CPUs

    def __post_init__(self):
        if not self.project:
            raise ConfigError("project is required: a suite file, e.g. projects/table2.yaml")
        from ..resources import resolve

        self.project = resolve("projects", self.project)  # a file, or a shipped suite by name (table2)
        if self.reuse not in SUITE_REUSE:
            raise one_of("reuse", self.reuse, SUITE_REUSE)
        if not _NAME.match(str(self.scale)):
            raise ConfigError(f"scale={self.scale!r} is not a valid scale name (letters, digits, '.', '_', '-')")
        check_experiment(self.experiment)
        if self.priors and not self.dry_run:
            raise ConfigError(f"priors={self.priors!r} sizes the claims of a dry run only; add dry_run=true")
        _check_positive_int("workers", self.workers, 1024)
        if self.ray_address and self.workers == 1:
            raise ConfigError(f"ray_address={self.ray_address!r} needs workers >= 2 (workers=1 runs the steps in "
                              "order in this process, without Ray)")
        if self.ray_address and not _RAY_ADDRESS.match(self.ray_address):
            raise ConfigError(f"ray_address={self.ray_address!r} is not a Ray address; allowed: auto, "
                              "ray://host:port (a Ray client server) or host:port (a head node's GCS)")

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}

