"""Issue 13 §3: a seeded, stratified validation split carved out of the TRAINING split for every choice;
test data only for the report."""
from __future__ import annotations

import pytest
import torch

from robust_transfer.data import ImageData, load_dataset
from robust_transfer.data.validation import TRAIN_TAG, VAL_TAG, carve_validation
from robust_transfer.digests import indices_sha256
from robust_transfer.errors import ConfigError, DataError
from robust_transfer.expr import choosing_on_test_warning, names_of_test_metrics


def _data(counts=(30, 20, 10)):
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8)[:, None, None, None]
    return ImageData(images.expand(-1, 3, 2, 2).contiguous(), labels, tuple(f"c{i}" for i in range(len(counts))),
                     "synthetic", "train")


def test_split_is_disjoint_stratified_seeded_and_recorded():
    data = _data()
    s = carve_validation(data, val_fraction=0.2, seed=3)
    tr, va = set(s.train_indices.tolist()), set(s.val_indices.tolist())
    assert not tr & va and tr | va == set(range(len(data)))               # never overlapping, nothing lost
    assert torch.bincount(s.val.labels).tolist() == [6, 4, 2]             # stratified: 20% of every class
    assert torch.equal(s.val.labels, data.labels[s.val_indices])
    again = carve_validation(data, val_fraction=0.2, seed=3)
    assert torch.equal(again.val_indices, s.val_indices)                  # seeded
    assert not torch.equal(carve_validation(data, val_fraction=0.2, seed=4).val_indices, s.val_indices)
    assert s.params() == {"val_size": 12, "train_size": 48, "val_seed": 3}
    assert s.tags() == {VAL_TAG: indices_sha256(s.val_indices), TRAIN_TAG: indices_sha256(s.train_indices)}


def test_per_class_counts_training_images_after_the_split():
    data = _data()
    s = carve_validation(data, val_per_class=3, per_class=5, seed=0)
    assert torch.bincount(s.val.labels).tolist() == [3, 3, 3]
    assert torch.bincount(s.train.labels).tolist() == [5, 5, 5]
    assert not set(s.train_indices.tolist()) & set(s.val_indices.tolist())
    with pytest.raises(DataError, match="per_class=8 .*after the validation split"):
        carve_validation(data, val_per_class=3, per_class=8, seed=0)       # class c2 keeps 7 training images


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"val_fraction": 0.0}, ConfigError, r"val_fraction=0.0 is out of range; allowed: \(0, 0.5\]"),
    ({"val_fraction": 0.6}, ConfigError, r"val_fraction=0.6 is out of range"),
    ({"val_fraction": 0.05}, DataError, "c2"),                               # 3 images for 3 classes ... c2 gets none
    ({"val_per_class": 10}, DataError, "val_per_class=10 leaves class 'c2'"),  # c2 has only 10
])
def test_requests_the_data_cannot_meet_are_one_line(kwargs, error, fragment):
    with pytest.raises(error, match=fragment) as e:
        carve_validation(_data(), seed=0, **kwargs)
    assert "\n" not in str(e.value)


def test_a_run_trains_on_what_it_records_and_never_on_validation_images(workdir, tiny_folder):
    """The `train` entry point's recorded indices are the carve's, and its training data excludes the validation set."""
    from robust_transfer.config import TrainConfig
    from robust_transfer.reporting import MemoryLogger
    from robust_transfer.strategies.train import load_training_data

    cfg = TrainConfig(dataset=f"imagefolder:{tiny_folder}", per_class=10, progress=False, device="cpu")
    train, val, test, split = load_training_data(cfg)
    full = load_dataset(f"imagefolder:{tiny_folder}", "train", progress=False)
    expected = carve_validation(full, val_fraction=0.1, seed=0, per_class=10)
    assert torch.equal(split.val_indices, expected.val_indices) and torch.equal(split.train_indices, expected.train_indices)
    assert len(train) == 30 and len(val) == 8 and len(test) == 36
    # another training seed: the same validation images (candidates are compared on one set), other training ones
    *_, other = load_training_data(TrainConfig(dataset=f"imagefolder:{tiny_folder}", per_class=10, seed=1,
                                               progress=False, device="cpu"))
    assert torch.equal(other.val_indices, split.val_indices)
    assert not torch.equal(other.train_indices, split.train_indices)
    assert not set(other.train_indices.tolist()) & set(split.val_indices.tolist())
    # pixel-level: no validation image is a training image
    flat = lambda d: {bytes(im.numpy().tobytes()) for im in d.images}  # noqa: E731
    assert not flat(train) & flat(val)
    log = MemoryLogger()
    from robust_transfer.strategies.validate import record_split

    record_split(log, split)
    assert log.params == {"val_size": 8, "train_size": 30, "val_seed": 0} and set(log.tags) == {VAL_TAG, TRAIN_TAG}


def test_choosing_by_a_test_metric_is_named_in_one_line():
    assert names_of_test_metrics(["val_clean_acc", "val_pgd10_acc", "train_clean_acc", "train_loss"]) == []
    assert names_of_test_metrics(["clean_acc", "pgd20_acc", "aa_acc", "val_clean_acc"]) == ["clean_acc", "pgd20_acc",
                                                                                             "aa_acc"]
    line = choosing_on_test_warning("policy 'max pgd20_acc'", ["pgd20_acc"])
    assert line.startswith("warning: policy 'max pgd20_acc' chooses by test-set metric(s) pgd20_acc") and "\n" not in line
    assert choosing_on_test_warning("x", ["val_pgd10_acc"]) is None


def test_shipped_spaces_and_the_promote_default_choose_on_validation_metrics():
    from pathlib import Path

    from robust_transfer.config import PromoteConfig
    from robust_transfer.promotion import Policy
    from robust_transfer.search import load_space

    assert names_of_test_metrics(Policy.parse(PromoteConfig(name="m").policy).metric_names) == []
    for path in sorted(Path(__file__).resolve().parents[1].glob("search_spaces/*.yaml")):
        space = load_space(path)
        names = [n for o in space.objectives for n in o.expr.names] + [n for c in space.constraints for n in c.expr.names]
        assert names and names_of_test_metrics(names) == [], path.name


# ---------------------------------------------------------------- split=val for evaluate (issue 15)
def test_validation_split_for_evaluate_uses_what_training_recorded_else_defaults():
    """`evaluate --split val` re-carves the model's validation split: the recorded recipe, else (older
    checkpoints: seed and size only) the recipe that reproduces the recorded indices, else the defaults."""
    from robust_transfer.evaluation import validation_split

    data = _data()
    s = carve_validation(data, val_per_class=3, seed=5)
    rec = s.record()
    assert rec["val_per_class"] == 3 and "val_fraction" not in rec
    assert carve_validation(data, val_fraction=0.2, seed=1).record()["val_fraction"] == 0.2

    val, how = validation_split({"data_spec": "synthetic", "validation": rec}, data)
    assert torch.equal(val.images, s.val.images) and torch.equal(val.labels, s.val.labels)
    assert "recorded by the model's training: val_per_class=3 (recorded), val_seed=5" in how and "match" in how
    # an older record (sizes, seed, indices hash): the recipe is recovered from val_size, checked by the hash
    old = {k: v for k, v in rec.items() if k not in ("val_fraction", "val_per_class")}
    val, how = validation_split({"data_spec": "synthetic", "validation": old}, data)
    assert torch.equal(val.images, s.val.images) and "val_per_class=3 (from the recorded val_size)" in how
    # nothing recorded, or another dataset than the model's: the training defaults, and the tag says so
    default = carve_validation(data, val_fraction=0.1, seed=0)
    for meta, why in (({}, "records no validation split"),
                      ({"data_spec": "cifar10-jpeg", "validation": rec}, "not the one the model was trained on")):
        val, how = validation_split(meta, data)
        assert torch.equal(val.labels, default.val.labels) and torch.equal(val.images, default.val.images)
        assert how.startswith("training defaults val_fraction=0.1, val_seed=0") and why in how
    # a record no recipe reproduces: refused in one line (never evaluate on images the model trained on)
    bad = dict(old, val_indices_sha256="0" * 64)
    with pytest.raises(DataError, match="split=val: no validation split of synthetic") as e:
        validation_split({"data_spec": "synthetic", "validation": bad}, data)
    assert "\n" not in str(e.value)


def test_evaluate_split_val_on_a_registered_model_logs_and_tags_val_metrics(workdir, tiny_folder, capsys):
    import json
    import os

    import mlflow
    from mlflow.tracking import MlflowClient

    from robust_transfer.cli import main

    assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "6", "--batch-size", "24",
                 "--n-examples", "6", "--progress", "false", "--device", "cpu", "--val-per-class", "2",
                 "--val-seed", "5", "--checkpoint-dir", "src", "--register-as", "tiny"]) == 0
    meta = json.loads((workdir / "src" / "meta.json").read_text())
    assert meta["validation"]["val_per_class"] == 2 and meta["validation"]["val_seed"] == 5
    assert main(["evaluate", "--model", "models:/tiny/1", "--split", "val", "--suite", "standard", "--n-examples", "6",
                 "--apgd-iters", "2", "--apgd-targets", "1", "--square-queries", "5", "--progress", "false",
                 "--device", "cpu"]) == 0
    assert "val_standard_worst_acc" in capsys.readouterr().out
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    tags = client.get_model_version("tiny", "1").tags
    run = client.get_run(tags["eval.run_id"])
    assert "aa_acc" not in run.data.metrics and "val_clean_acc" in run.data.metrics
    assert float(tags["metric.val_standard_worst_acc"]) == pytest.approx(run.data.metrics["val_standard_worst_acc"],
                                                                      abs=1e-4)
    assert tags["eval.split"] == "val" and tags["eval.val_split"] == run.data.tags["rtl.eval_val_split"]
    assert tags["eval.val_split"].startswith("recorded by the model's training: val_per_class=2 (recorded), val_seed=5")
    # the evaluated images are the validation images the training held out, not training or test ones
    full = load_dataset(f"imagefolder:{tiny_folder}", "train", progress=False)
    held_out = carve_validation(full, val_per_class=2, seed=5)
    assert indices_sha256(held_out.val_indices) == meta["validation"]["val_indices_sha256"]
    assert run.data.tags["rtl.data_sha256"] == held_out.val.sha256()
    # a test-split evaluation afterwards: the stale validation tag goes
    assert main(["evaluate", "--model", "models:/tiny/1", "--suite", "standard", "--n-examples", "6",
                 "--apgd-iters", "2", "--apgd-targets", "1", "--square-queries", "5", "--progress", "false",
                 "--device", "cpu"]) == 0
    tags = client.get_model_version("tiny", "1").tags
    assert tags["eval.split"] == "test" and "eval.val_split" not in tags and "metric.standard_worst_acc" in tags
