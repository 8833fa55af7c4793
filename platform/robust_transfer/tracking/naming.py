"""Readable run names: `<entry>-<dataset>-<arch>[-<mode>]`, e.g. `train-cifar10-jpeg:half-a-small-cnn-pgd`."""
from __future__ import annotations

from pathlib import PurePath

from .runs import mlflow_client


def run_name(entry: str, dataset: str, arch: str, mode: str | None = None) -> str:
    """A dataset given by path (`imagefolder:/data/x/pets`) is named by its last component (`imagefolder:pets`)."""
    kind, sep, rest = str(dataset or "").partition(":")
    if "/" in rest:
        rest = PurePath(rest.rstrip("/")).name
    ds = f"{kind}{sep}{rest}"
    return "-".join(str(p) for p in (entry, ds, arch, mode) if p)[:250]


def name_run(run_id: str, name: str) -> None:
    """Give the run `name`, unless someone else named it: a suite step (tag rtl.step, named after the
    step) or a child run (a search trial `<study>-trial-N`, a retrain_blocks `k=N`)."""
    client = mlflow_client()
    tags = client.get_run(run_id).data.tags
    if "rtl.step" in tags or "mlflow.parentRunId" in tags:
        return
    client.update_run(run_id, name=name)


def model_label(model_uri: str) -> str:
    """A model URI or path, short enough for a run name: `models:/r50@champion` → `r50@champion`,
    `runs:/<id>/checkpoint` → `run-<id[:8]>`, a path → its last component."""
    s = str(model_uri).rstrip("/")
    if s.startswith("models:/"):
        return s[len("models:/"):]
    if s.startswith("runs:/"):
        return "run-" + s[len("runs:/"):].split("/")[0][:8]
    return PurePath(s).name or s
