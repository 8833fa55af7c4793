"""`finetune_adv` (Fig. 3 baseline): end-to-end fine-tuning on PGD-k examples, head replaced."""

import pytest
import torch

from robust_transfer.config import FinetuneAdvConfig
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies.finetune_adv import finetune_adv
from support.transfer import all_runs, mlflow_run, run_strategy, state


def test_everything_trains_on_adversarial_examples_with_a_new_head(workdir, sources, other_folder):
    from robust_transfer import load_model

    before = state(load_model(sources.src))
    log = MemoryLogger()
    cfg = FinetuneAdvConfig(source_model=sources.src, target=f"imagefolder:{other_folder}", iterations=3, steps=2,
                            batch_size=16, n_examples=8, eval_steps=2, progress=False, checkpoint_dir="ck")
    res = run_strategy(finetune_adv, cfg, log)
    after = state(res.model)
    assert res.model.num_classes == 4 and after["head.weight"].shape[0] == 4
    convs = [k for k in before if k.endswith(".weight") and before[k].dim() == 4]
    assert convs and all(not torch.equal(before[k], after[k]) for k in convs)     # end to end
    assert not torch.equal(before["body.0.1.running_mean"], after["body.0.1.running_mean"])
    assert log.history("train_adv_acc") and set(res.metrics) == {"clean_acc", "pgd2_acc", "val_clean_acc", "val_pgd10_acc"}
    assert res.meta["training"]["steps"] == 2 and res.meta["lineage"]["strategy"] == "finetune_adv"
    assert (FinetuneAdvConfig(source_model="x").epsilon, FinetuneAdvConfig(source_model="x").step_size) == (5.0, 3.0)


@pytest.mark.slow
def test_mlflow_run_finetune_adv_entry_point(workdir, sources):
    out = mlflow_run(workdir, "finetune_adv", source_model=sources.src, iterations=2, steps=1, n_examples=6,
                     eval_steps=2, checkpoint_dir=workdir / "ck")
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["rtl.strategy"] == "finetune_adv"
    assert run.data.tags["rtl.source_model"] == sources.src and run.data.params["steps"] == "1"
