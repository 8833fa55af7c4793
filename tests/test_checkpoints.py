"""Checkpoints: safetensors + JSON, exact round trip, refusals that never unpickle."""
import json
import os
import pickle

import pytest
import torch

from robust_transfer import create_model, load_model
from robust_transfer.checkpoints import load_checkpoint, load_train_state, read_metadata, save_checkpoint
from robust_transfer.errors import ModelError
from robust_transfer.models import HeadSpec


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = create_model("small-cnn", 5, head=HeadSpec("mlp", mlp_depth=1, width=32, batch_norm=True))
    m.train()
    m(torch.rand(8, 3, 32, 32))  # move BN statistics so buffers are non-trivial
    return m.eval()


def test_round_trip_is_exact_and_trainable(tmp_path, model):
    save_checkpoint(tmp_path / "ck", model, {"data_spec": "cifar10-jpeg:half-a", "lineage": {"run_id": "r1"}})
    loaded = load_model(str(tmp_path / "ck")).eval()
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    meta = read_metadata(tmp_path / "ck")
    assert meta["arch"] == "small-cnn" and meta["num_classes"] == 5
    assert meta["head"] == {"kind": "mlp", "mlp_depth": 1, "width": 32, "dropout": 0.0, "batch_norm": True}
    assert meta["lineage"] == {"run_id": "r1"}
    loaded.train()
    loss = loaded(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in loaded.parameters())


def test_train_state_round_trip(tmp_path, model):
    state = {"tensors": {"opt.0.momentum_buffer": torch.ones(3), "rng.torch": torch.get_rng_state()},
             "json": {"epochs_done": 2, "updates": 10}}
    save_checkpoint(tmp_path / "ck", model, train_state=state)
    got = load_train_state(tmp_path / "ck")
    assert got["json"] == {"epochs_done": 2, "updates": 10}
    assert torch.equal(got["tensors"]["rng.torch"], state["tensors"]["rng.torch"])


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path, model):
    save_checkpoint(tmp_path / "ck", model)
    save_checkpoint(tmp_path / "ck", model, {"data_spec": "v2"})
    assert read_metadata(tmp_path / "ck")["data_spec"] == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


@pytest.mark.parametrize("kwargs,needle", [(dict(expect_arch="wrn-16-4"), "arch='small-cnn'"),
                                            (dict(expect_classes=10), "num_classes=5")])
def test_mismatch_refused(tmp_path, model, kwargs, needle):
    save_checkpoint(tmp_path / "ck", model)
    with pytest.raises(ModelError, match=needle):
        load_checkpoint(tmp_path / "ck", **kwargs)


def _corrupt_weights(d):
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100])


def _corrupt_meta(d):
    (d / "meta.json").write_text("{not json")


def _wrong_arch_meta(d):
    meta = json.loads((d / "meta.json").read_text())
    meta["arch"] = "wrn-16-4"
    (d / "meta.json").write_text(json.dumps(meta))


def _foreign_format(d):
    meta = json.loads((d / "meta.json").read_text())
    meta["format"] = "pickle"
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage,needle", [(_corrupt_weights, "corrupted weights"), (_corrupt_meta, "corrupted meta.json"),
                                           (_wrong_arch_meta, "does not match arch='wrn-16-4'"),
                                           (_foreign_format, "not a robust-transfer checkpoint")])
def test_damaged_checkpoints_give_one_clear_error(tmp_path, model, damage, needle):
    save_checkpoint(tmp_path / "ck", model)
    damage(tmp_path / "ck")
    with pytest.raises(ModelError, match=needle):
        load_checkpoint(tmp_path / "ck")


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_crafted_to_run_code_is_refused_and_never_executed(tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "ck", model)
    # An attacker replaces the weights with a pickle (what torch.save would produce).
    (tmp_path / "ck" / "model.safetensors").write_bytes(pickle.dumps({"w": _Boom()}))
    with pytest.raises(ModelError, match="corrupted weights"):
        load_checkpoint(tmp_path / "ck")
    assert not (tmp_path / "PWNED").exists()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
