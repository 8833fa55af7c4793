"""`transfer` (Eq. 2): frozen extractor in eval mode, feature cache, whole-model evaluation, tracking."""
import json
from pathlib import Path

import pytest
import torch

from robust_transfer.checkpoints import read_metadata
from robust_transfer.config import TransferConfig
from robust_transfer.data import load_dataset
from robust_transfer.errors import ModelError
from robust_transfer.evaluation import evaluate_tensors
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies import features
from robust_transfer.strategies.transfer import transfer
from support.transfer import FAST, all_runs, mlflow_run, rtl, run_strategy, state


def cfg(src, **kw) -> TransferConfig:
    base = dict(source_model=src, epochs=3, batch_size=16, n_examples=12, eval_steps=3, progress=False,
                checkpoint_dir="ck")
    return TransferConfig(**(base | kw))


@pytest.mark.parametrize("kw", [dict(), dict(augment=True), dict(head="mlp", width=32, batch_norm=True, dropout=0.25)],
                         ids=["cached", "online-augmented", "mlp-bn-head"])
def test_extractor_and_its_batchnorm_statistics_do_not_move(workdir, sources, kw):
    from robust_transfer import load_model

    before = state(load_model(sources.src), "body.")
    assert any("running_mean" in k for k in before)
    res = run_strategy(transfer, cfg(sources.src, **kw), MemoryLogger())
    after = state(res.model, "body.")
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} changed"
    assert res.model.head_spec.kind == kw.get("head", "linear")


def test_feature_cache_is_built_once_and_reused_across_runs_and_heads(workdir, sources):
    n0 = features.FEATURE_COMPUTATIONS
    first = run_strategy(transfer, cfg(sources.src), MemoryLogger())
    assert features.FEATURE_COMPUTATIONS == n0 + 1
    files = list((workdir / "cache" / "features").glob("*.safetensors"))
    assert len(files) == 1 and not list(files[0].parent.glob("*.tmp"))
    run_strategy(transfer, cfg(sources.src, head="mlp", width=16, seed=1), MemoryLogger())   # another head, same z(x)
    run_strategy(transfer, cfg(sources.src, augment=True), MemoryLogger())                    # augmented: computed online
    assert features.FEATURE_COMPUTATIONS == n0 + 1
    run_strategy(transfer, cfg(sources.src, per_class=10), MemoryLogger())                     # other data: other features
    assert features.FEATURE_COMPUTATIONS == n0 + 2
    assert first.meta["training"]["feature_cache"] is True


def test_cached_and_recomputed_features_train_the_same_head(workdir, sources):
    # fp32: under bf16 autocast (precision=auto on a CPU with native bf16) the online path recomputes the features
    # in bf16 each step while the cache holds them once, so the two heads agree only to bf16 rounding.
    cached = run_strategy(transfer, cfg(sources.src, checkpoint_dir="a", precision="fp32"), MemoryLogger())
    online = run_strategy(transfer, cfg(sources.src, checkpoint_dir="b", feature_cache=False, precision="fp32"),
                          MemoryLogger())
    for (k, a), b in zip(cached.model.head.state_dict().items(), online.model.head.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k


def test_corrupt_feature_file_is_rebuilt(workdir, sources, capsys):
    run_strategy(transfer, cfg(sources.src), MemoryLogger())
    (path,) = (workdir / "cache" / "features").glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    n0 = features.FEATURE_COMPUTATIONS
    run_strategy(transfer, cfg(sources.src), MemoryLogger())
    assert features.FEATURE_COMPUTATIONS == n0 + 1 and "corrupt" in capsys.readouterr().err


def test_transfer_from_the_targets_own_model_reproduces_its_accuracy(workdir, sources):
    from robust_transfer import load_model

    test = load_dataset(sources.spec, "test", progress=False)
    own = evaluate_tensors(load_model(sources.src), test.images, test.labels, attacks="clean", n_examples=None,
                           device="cpu", progress=False, resume=False).result.metrics["clean_acc"]
    res = run_strategy(transfer, cfg(sources.src, epochs=30, n_examples=len(test)), MemoryLogger())
    assert own >= 0.9
    assert abs(res.metrics["clean_acc"] - own) <= 0.1


def test_evaluation_attacks_the_whole_model_in_pixel_space(workdir, sources):
    res = run_strategy(transfer, cfg(sources.src, eval_epsilon=32.0, eval_step_size=8.0), MemoryLogger())
    test = load_dataset(sources.spec, "test", progress=False)
    again = evaluate_tensors(res.model, test.images, test.labels, attacks="clean,pgd3", epsilon=32.0, step_size=8.0,
                             n_examples=12, seed=0, device="cpu", progress=False, resume=False).result
    assert {k: res.metrics[k] for k in ("clean_acc", "pgd3_acc")} == \
        {k: v for k, v in again.metrics.items() if k != "worst_acc"}
    assert set(res.metrics) == {"clean_acc", "pgd3_acc", "val_clean_acc", "val_pgd10_acc"}
    assert res.meta["evaluation"]["indices_sha256"] == again.indices_sha256
    assert res.meta["eval_threat"]["epsilon"] == 32.0


def test_new_target_classes_per_class_and_upsample(workdir, sources, other_folder):
    res = run_strategy(transfer, cfg(sources.src, target=f"imagefolder:{other_folder}", per_class=5), MemoryLogger())
    assert res.model.num_classes == 4 and res.meta["classes"] == ["class0", "class1", "class2", "class3"]
    with pytest.raises(ModelError, match="upsample=true"):
        run_strategy(transfer, cfg(sources.src32), MemoryLogger())
    up = run_strategy(transfer, cfg(sources.src32, upsample=True), MemoryLogger())
    assert up.model.input_size == 32 and read_metadata("ck")["input_size"] == 32


def test_cli_run_records_source_lineage_tags_and_metrics(workdir, sources):
    assert rtl("transfer", "--source-model", sources.src, "--epochs", "2", "--register-as", "auto", *FAST) == 0
    (run,) = all_runs()
    tags, m = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["rtl.strategy"] == "transfer" and tags["rtl.source_model"] == sources.src
    assert tags["rtl.data"] == sources.spec and len(tags["rtl.data_sha256"]) == 64
    assert {"clean_acc", "pgd3_acc", "train_loss", "train_clean_acc", "epoch_time_s", "images_per_s"} <= set(m)
    from mlflow.tracking import MlflowClient

    history = MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert [h.step for h in history] == [0, 1]
    per_example = MlflowClient().download_artifacts(run.info.run_id, "evaluation/per_example.json", str(workdir))
    rec = json.loads(Path(per_example).read_text())
    assert rec["n_examples"] == len(rec["indices"]) == len(rec["correct"]["pgd3"]) == 12
    assert rec["indices_sha256"] == tags["rtl.eval_indices_sha256"]
    assert sum(rec["correct"]["clean"]) / 12 == pytest.approx(m["clean_acc"])
    name = tags["rtl.registered_model"].split("/")[0]
    assert name.endswith("-small-cnn-transfer")
    from robust_transfer import load_model_with_meta

    _, meta = load_model_with_meta(f"models:/{name}@challenger")
    assert meta["lineage"]["strategy"] == "transfer" and meta["lineage"]["source_model"] == sources.src
    assert meta["lineage"]["source_meta"]["data_spec"] == sources.spec
    assert meta["lineage"]["run_id"] == run.info.run_id


def test_source_given_as_registry_and_run_uris(workdir, sources):
    assert rtl("transfer", "--source-model", sources.src, "--epochs", "1", "--register-as", "tiny-src", *FAST) == 0
    (first,) = all_runs()
    for uri in ("models:/tiny-src@challenger", "models:/tiny-src/1", f"runs:/{first.info.run_id}/checkpoint"):
        assert rtl("transfer", "--source-model", uri, "--epochs", "1", *FAST) == 0
        run = max(all_runs(), key=lambda r: r.info.start_time)
        assert run.data.tags["rtl.source_model"] == uri
        ckpt = Path(run.data.params.get("checkpoint_dir") or next(Path("checkpoints").glob(f"*{run.info.run_id[:12]}")))
        lineage = json.loads((ckpt / "meta.json").read_text())["lineage"]
        assert lineage["source_model"] == uri and lineage["source_meta"]["lineage"]["strategy"] == "transfer"


@pytest.mark.slow
def test_mlflow_run_transfer_entry_point(workdir, sources):
    out = mlflow_run(workdir, "transfer", source_model=sources.src, epochs=2, n_examples=6, eval_steps=2,
                     head="mlp", width=16, checkpoint_dir=workdir / "ck")
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["rtl.strategy"] == "transfer"
    assert run.data.params["head"] == "mlp" and "pgd2_acc" in run.data.metrics
