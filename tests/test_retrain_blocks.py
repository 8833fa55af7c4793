"""`retrain_blocks` (Fig. 1): the k deepest blocks re-initialised and re-trained, the rest frozen;
a list of k gives nested child runs and a robustness-vs-k plot."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from robust_transfer.config import RetrainBlocksConfig
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies.retrain_blocks import retrain_blocks
from support.transfer import FAST, all_runs, load_source, mlflow_run, rtl, state


def cfg(src, **kw) -> RetrainBlocksConfig:
    base = dict(source_model=src, iterations=4, batch_size=16, n_examples=12, eval_steps=3, progress=False,
                checkpoint_dir="ck", lr=0.01)
    return RetrainBlocksConfig(**(base | kw))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_only_the_k_deepest_blocks_are_reinitialised_and_trained(workdir, sources, k):
    from robust_transfer import load_model

    source = load_model(sources.src)
    n_blocks = len(source.blocks())
    assert n_blocks == 5  # small-cnn: 4 body blocks + head
    prefixes = [f"body.{i}." for i in range(n_blocks - 1)] + ["head."]
    before = state(source)
    res = retrain_blocks(cfg(sources.src), k, MemoryLogger(), source=load_source(sources.src))
    after = state(res.model)
    for i, prefix in enumerate(prefixes):
        keys = [key for key in before if key.startswith(prefix)]
        weights = [key for key in keys if key.endswith("weight")]
        assert weights, f"no weights under {prefix}"
        if i < n_blocks - k:   # frozen: parameters AND BatchNorm statistics exactly the source's
            assert all(torch.equal(before[key], after[key]) for key in keys), prefix
        else:                  # re-initialised (then trained on natural examples)
            assert all(not torch.equal(before[key], after[key]) for key in weights), prefix
    assert res.meta["training"]["k"] == k and res.meta["lineage"]["strategy"] == "retrain_blocks"
    assert set(res.metrics) == {"clean_acc", "pgd3_acc", "val_clean_acc", "val_pgd10_acc"}


def test_epochs_budget_when_iterations_is_cleared(workdir, sources):
    log = MemoryLogger()
    retrain_blocks(cfg(sources.src, iterations=None, epochs=2), 1, log, source=load_source(sources.src))
    assert len(log.history("train_loss")) == 2 and len(log.history("epoch_time_s")) == 2


def test_a_list_of_k_gives_nested_child_runs_and_a_plot(workdir, sources, monkeypatch):
    from robust_transfer.tracking import models

    loads = []
    real = models.load_model_with_meta
    monkeypatch.setattr(models, "load_model_with_meta", lambda uri: (loads.append(uri), real(uri))[1])
    assert rtl("retrain-blocks", "--source-model", sources.src, "--k", "1,2", "--iterations", "2",
               "--checkpoint-dir", "ck", *FAST) == 0
    runs = all_runs()
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and sorted(r.data.params["k"] for r in children) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in children:
        assert r.data.tags["rtl.strategy"] == "retrain_blocks" and r.data.tags["rtl.source_model"] == sources.src
        assert r.info.experiment_id == parent.info.experiment_id and "pgd3_acc" in r.data.metrics
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "pgd3_acc_vs_k")] == [1, 2]
    assert {"source_clean_acc", "source_pgd3_acc"} <= set(parent.data.metrics)
    arts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "robustness_vs_k.png" in arts
    png = client.download_artifacts(parent.info.run_id, "robustness_vs_k.png", str(workdir))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert (workdir / "ck" / "k1" / "meta.json").is_file() and (workdir / "ck" / "k2" / "meta.json").is_file()
    assert loads == [sources.src]  # the source is resolved once, before the run, for every k and the baseline


@pytest.mark.slow
def test_mlflow_run_retrain_blocks_entry_point(workdir, sources):
    out = mlflow_run(workdir, "retrain_blocks", source_model=sources.src, k="1,2", iterations=2, n_examples=6,
                     eval_steps=2, checkpoint_dir=workdir / "ck")
    assert out.returncode == 0, out.stderr[-2000:]
    runs = all_runs()
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert all(r.info.experiment_id == parent.info.experiment_id for r in runs)
