"""`rtl import` (issue #14): every published layout, written from a reference module in exactly that
layout, imports to a model whose logits equal the reference's (normalisation included); bad files
are one line, exit 4, nothing registered.

The reference modules: torchvision's own ResNets; MadryLab `robustness`'s AttackerModel layout
(`module.normalizer`, `module.model`, `module.attacker.{normalize,model}`), rebuilt here from its
InputNormalize; RobustBench's WideResNet and PreActResNet, copied here from
robustbench/model_zoo/architectures/{wide_resnet,resnet}.py with their `mu`/`sigma` wrappers.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from mlflow.tracking import MlflowClient
from torch import nn

from support.transfer import FAST, all_runs, rtl

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


# --- the published layouts, rebuilt -------------------------------------------------------------------

class InputNormalize(nn.Module):  # robustness/tools/helpers.py
    def __init__(self, new_mean, new_std):
        super().__init__()
        self.register_buffer("new_mean", new_mean[..., None, None])
        self.register_buffer("new_std", new_std[..., None, None])

    def forward(self, x):
        return (torch.clamp(x, 0, 1) - self.new_mean) / self.new_std


class Attacker(nn.Module):  # robustness/attacker.py: holds the normaliser and the same classifier
    def __init__(self, model, mean, std):
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.model = model


class AttackerModel(nn.Module):  # robustness/attacker.py, forward without the attack
    def __init__(self, model, mean, std):
        super().__init__()
        self.normalizer = InputNormalize(mean, std)
        self.model = model
        self.attacker = Attacker(model, mean, std)

    def forward(self, x):
        return self.model(self.normalizer(x))


class DataParallelLike(nn.Module):  # what torch.nn.DataParallel saves: `module.` prefixes
    def __init__(self, module):
        super().__init__()
        self.module = module


class BasicBlock(nn.Module):  # robustbench/model_zoo/architectures/wide_resnet.py
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                                                padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, block, stride):
        super().__init__()
        self.layer = nn.Sequential(*[block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1)
                                     for i in range(int(nb_layers))])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, num_classes=10, widen_factor=10, sub_block1=False, bias_last=True):
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) / 6
        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], BasicBlock, 1)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], BasicBlock, 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], BasicBlock, 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], BasicBlock, 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes, bias=bias_last)
        self.nChannels = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.view(-1, self.nChannels))


class PreActBlock(nn.Module):  # robustbench/model_zoo/architectures/resnet.py
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, out_shortcut=False):
        super().__init__()
        self.out_shortcut = out_shortcut
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out if self.out_shortcut else x) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, num_classes=10, bn_before_fc=False, out_shortcut=False):
        super().__init__()
        self.in_planes, self.bn_before_fc, self.out_shortcut = 64, bn_before_fc, out_shortcut
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s, out_shortcut=self.out_shortcut))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn_before_fc:
            out = F.relu(self.bn(out))
        return self.linear(F.avg_pool2d(out, 4).view(out.size(0), -1))


class WithMuSigma(nn.Module):
    """RobustBench's models that carry their own normalisation (Rice2020OverfittingNet, Wong2020FastNet,
    ...): `mu`/`sigma` buffers beside the network's own modules, applied in forward."""

    def __init__(self, net, mean, std):
        super().__init__()
        for name, child in net.named_children():
            self.add_module(name, child)
        self._net = [net]  # not a submodule: the state dict has the network's keys at the top level
        self.register_buffer("mu", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("sigma", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return self._net[0]((x - self.mu) / self.sigma)


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode logits depend on every tensor."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


def inputs(n: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def registered(name: str) -> list:
    client = MlflowClient()
    return [mv for mv in client.search_model_versions(f"name='{name}'")]


def import_and_compare(tmp: Path, file: Path, fmt: str, arch: str, reference, *extra, size: int = 32,
                       name: str = "imported") -> dict:
    from robust_transfer import load_model_with_meta

    assert rtl("import", "--file", file, "--format", fmt, "--arch", arch, "--register-as", name, *extra) == 0
    model, meta = load_model_with_meta(f"models:/{name}/1")
    x = inputs(size=size)
    with torch.no_grad():
        diff = (model.eval()(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5, f"{fmt}/{arch}: imported logits differ from the reference by {diff}"
    assert meta["arch"] == arch and meta["lineage"]["format"] == fmt and meta["lineage"]["file"] == file.name
    import hashlib
    assert meta["lineage"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    return meta


# --- one file per format ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet18"])
def test_torchvision_state_dict_imports_with_exact_logits(wd, arch):
    torch.manual_seed(0)
    ref = randomize_bn(getattr(torchvision.models, arch)(num_classes=10))
    torch.save(ref.state_dict(), wd / f"{arch}.pth")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    meta = import_and_compare(wd, wd / f"{arch}.pth", "torchvision", arch, lambda x: ref((x - mean) / std),
                              "--num-classes", "10")
    assert meta["input_size"] == 224 and meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx(IMAGENET_MEAN) and meta["std"] == pytest.approx(IMAGENET_STD)
    assert "threat_model" not in meta  # none was given


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet34", "resnet50", "resnet101", "wide_resnet50_2"])
def test_torchvision_bigger_resnets_import_with_exact_logits(wd, arch):
    torch.manual_seed(0)
    ref = randomize_bn(getattr(torchvision.models, arch)(num_classes=7))
    torch.save(ref.state_dict(), wd / f"{arch}.pth")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    import_and_compare(wd, wd / f"{arch}.pth", "torchvision", arch, lambda x: ref((x - mean) / std))


def robustness_checkpoint(path: Path, arch: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A file in the layout of MadryLab robustness's `ch.save(sd_info, ...)` (train.py): the DataParallel
    AttackerModel state dict under `model`, with the optimizer state, schedule and epoch beside it."""
    torch.manual_seed(seed)
    net = randomize_bn(getattr(torchvision.models, arch)(num_classes=num_classes), seed)
    wrapped = AttackerModel(net, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)).eval()
    sd = DataParallelLike(wrapped).state_dict()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save({"model": sd, "optimizer": opt.state_dict(), "schedule": None, "epoch": 90}, path)
    return wrapped


@pytest.mark.parametrize("arch", ["resnet18"])
def test_robustness_checkpoint_imports_with_exact_logits(wd, arch):
    ref = robustness_checkpoint(wd / "madry.ckpt", arch)
    keys = set(torch.load(wd / "madry.ckpt", weights_only=True)["model"])
    assert {"module.normalizer.new_mean", "module.attacker.normalize.new_std", "module.model.fc.weight",
            "module.attacker.model.layer4.1.conv2.weight"} <= keys  # the published layout, duplicates included
    meta = import_and_compare(wd, wd / "madry.ckpt", "robustness", arch, ref, "--norm", "l2", "--epsilon", "3")
    assert meta["threat_model"] == {"norm": "l2", "epsilon": 3.0, "as_given": True}
    assert meta["mean"] == pytest.approx(IMAGENET_MEAN)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "wide_resnet50_2"])
def test_robustness_bigger_checkpoints_import_with_exact_logits(wd, arch):
    ref = robustness_checkpoint(wd / "madry.ckpt", arch, num_classes=5)
    import_and_compare(wd, wd / "madry.ckpt", "robustness", arch, ref, "--epsilon", "4")


def robustbench_file(path: Path, net: nn.Module, mean=None, std=None, wrap: str | None = "state_dict") -> nn.Module:
    """RobustBench's state-dict layout: the network's keys, `module.`-prefixed as saved from DataParallel
    (Carmon2019Unlabeled's file has them under `state_dict`), plus `mu`/`sigma` when it normalises."""
    net = randomize_bn(net)
    ref = WithMuSigma(net, mean, std).eval() if mean is not None else net
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({wrap: sd} if wrap else sd, path)
    return ref


@pytest.mark.parametrize("arch,make,norm,wrap", [
    ("wrn-16-2", lambda: WideResNet(16, 10, 2, sub_block1=True), (CIFAR_MEAN, CIFAR_STD), "state_dict"),
    ("wrn-10-1", lambda: WideResNet(10, 100, 1, bias_last=False), None, None),
    ("preact-resnet18", lambda: PreActResNet(100, bn_before_fc=True, out_shortcut=True),  # Rice2020Overfitting
     ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), None),
    ("preact-resnet18-rb", lambda: PreActResNet(10), (CIFAR_MEAN, CIFAR_STD), None),  # Wong2020Fast
    ("preact-resnet18-rb", lambda: PreActResNet(10), None, "state_dict"),
], ids=["wrn-sub_block1-mu", "wrn-no-bias-raw", "preact-bn-out_shortcut-cifar100", "preact-rb-mu", "preact-rb-raw"])
def test_robustbench_state_dicts_import_with_exact_logits(wd, arch, make, norm, wrap):
    torch.manual_seed(0)
    ref = robustbench_file(wd / "rb.pt", make(), *(norm or (None, None)), wrap=wrap)
    meta = import_and_compare(wd, wd / "rb.pt", "robustbench", arch, ref, "--epsilon", "8")
    assert meta["input_size"] == 32
    assert meta["mean"] == pytest.approx(norm[0] if norm else [0.0] * 3)
    assert meta["std"] == pytest.approx(norm[1] if norm else [1.0] * 3)
    assert meta["threat_model"]["norm"] == "linf"


@pytest.mark.slow
@pytest.mark.parametrize("depth", [28, 34])
def test_robustbench_wrn_x_10_imports_with_exact_logits(wd, depth):
    torch.manual_seed(0)
    ref = robustbench_file(wd / "rb.pt", WideResNet(depth, 10, 10, sub_block1=True), CIFAR_MEAN, CIFAR_STD)
    import_and_compare(wd, wd / "rb.pt", "robustbench", f"wrn-{depth}-10", ref)


def test_keymap_state_dict_imports_with_exact_logits(wd):
    from robust_transfer import create_model

    torch.manual_seed(0)
    ours = randomize_bn(create_model("small-cnn", 6, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    # a foreign naming: backbone.stageN.* for the blocks, classifier.* for the head, plus a stray tensor
    foreign = {("classifier." + k[5:]) if k.startswith("head.") else "net.backbone.stage" + k[5:]: v
               for k, v in ours.state_dict().items() if k not in ("mean", "std")}
    foreign["net.aux_logits.weight"] = torch.zeros(3)
    from safetensors.torch import save_file
    save_file(foreign, str(wd / "foreign.safetensors"))
    (wd / "map.yaml").write_text(
        "# foreign names -> ours (first matching rename wins)\n"
        "strip_prefix: 'net.'\n"
        "drop: ['^net\\.aux_logits\\.']\n"
        "rename:\n"
        "  - ['^backbone\\.stage', 'body.']\n"
        "  - ['^classifier\\.', 'head.']\n"
        "mean: [0.5, 0.5, 0.5]\n"
        "std: [0.25, 0.25, 0.25]\n")
    import_and_compare(wd, wd / "foreign.safetensors", "keymap", "small-cnn", ours, "--key-map", wd / "map.yaml")


def test_a_transfer_run_starts_from_an_imported_model(wd, tiny_folder):
    """The imported torchvision ResNet-18 is a source like any other: transfer to a 16×16 target with upsample."""
    torch.manual_seed(0)
    ref = randomize_bn(torchvision.models.resnet18(num_classes=1000))
    torch.save(ref.state_dict(), wd / "r18.pth")
    assert rtl("import", "--file", wd / "r18.pth", "--format", "torchvision", "--arch", "resnet18",
               "--input-size", "32", "--register-as", "tv-r18") == 0
    assert rtl("transfer", "--source-model", "models:/tv-r18/1", "--target", f"imagefolder:{tiny_folder}",
               "--upsample", "true", "--epochs", "1", "--register-as", "tv-r18-tiny", *FAST) == 0
    runs = {r.data.tags.get("rtl.strategy"): r for r in all_runs()}
    assert runs["transfer"].info.status == "FINISHED"
    assert runs["transfer"].data.tags["rtl.source_model"] == "models:/tv-r18/1"
    assert "clean_acc" in runs["transfer"].data.metrics
    from robust_transfer import load_model_with_meta
    model, meta = load_model_with_meta("models:/tv-r18-tiny/1")
    assert meta["arch"] == "resnet18" and model.num_classes == 3
    assert meta["lineage"]["source_meta"]["lineage"]["format"] == "torchvision"  # the import stays in the lineage


# --- bad files: one line, exit 4, nothing registered -----------------------------------------------------

class Evil:  # a pickle that would run code when loaded
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def _bad_files(wd: Path) -> dict[str, tuple[Path, str, str, list[str]]]:
    """case -> (file, format, arch, extra args)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4)
    sd = net.state_dict()
    files = {}
    import argparse
    torch.save(net, wd / "whole-module.pt")  # the full pickled nn.Module
    files["pickled-module"] = (wd / "whole-module.pt", "torchvision", "resnet18", [])
    torch.save({"model": {f"module.model.{k}": v for k, v in sd.items()}, "args": argparse.Namespace(lr=0.1)},
               wd / "with-args.ckpt")
    files["pickled-namespace"] = (wd / "with-args.ckpt", "robustness", "resnet18", [])
    with open(wd / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    files["pickled-code"] = (wd / "evil.pt", "robustbench", "wrn-10-1", [])
    torch.save({k: v for k, v in sd.items() if k != "layer2.0.conv1.weight"}, wd / "missing.pth")
    files["missing-key"] = (wd / "missing.pth", "torchvision", "resnet18", [])
    torch.save({**sd, "extra.weight": torch.zeros(1)}, wd / "extra.pth")
    files["unexpected-key"] = (wd / "extra.pth", "torchvision", "resnet18", [])
    torch.save(sd, wd / "r18.pth")
    files["wrong-arch"] = (wd / "r18.pth", "torchvision", "resnet34", [])
    files["wrong-format"] = (wd / "r18.pth", "robustbench", "wrn-28-10", [])
    files["unknown-format"] = (wd / "r18.pth", "caffe", "resnet18", [])
    files["unknown-arch"] = (wd / "r18.pth", "torchvision", "resnet9000", [])
    files["arch-of-other-format"] = (wd / "r18.pth", "robustbench", "resnet18", [])
    files["num-classes-mismatch"] = (wd / "r18.pth", "torchvision", "resnet18", ["--num-classes", "10"])
    (wd / "random.bin").write_bytes(bytes(range(256)) * 16)
    files["not-a-checkpoint"] = (wd / "random.bin", "torchvision", "resnet18", [])
    files["missing-file"] = (wd / "nope.pth", "torchvision", "resnet18", [])
    shape = dict(sd)
    shape["fc.bias"] = torch.zeros(5)
    torch.save(shape, wd / "shape.pth")
    files["wrong-shape"] = (wd / "shape.pth", "torchvision", "resnet18", [])
    madry = {f"module.model.{k}": v for k, v in sd.items()}
    torch.save({"model": madry}, wd / "no-normalizer.ckpt")
    files["robustness-without-normalizer"] = (wd / "no-normalizer.ckpt", "robustness", "resnet18", [])
    return files


BAD = ["pickled-module", "pickled-namespace", "pickled-code", "missing-key", "unexpected-key", "wrong-arch",
       "wrong-format", "unknown-format", "unknown-arch", "arch-of-other-format", "num-classes-mismatch",
       "not-a-checkpoint", "missing-file", "wrong-shape", "robustness-without-normalizer"]
NEEDLE = {"pickled-module": "unpickling", "pickled-namespace": "unpickling", "pickled-code": "unpickling",
          "missing-key": "layer2.0.conv1.weight", "unexpected-key": "extra.weight", "wrong-arch": "missing",
          "wrong-format": "unexpected", "unknown-format": "caffe", "unknown-arch": "resnet9000",
          "arch-of-other-format": "robustbench", "num-classes-mismatch": "num_classes=10", "not-a-checkpoint":
          "random.bin", "missing-file": "nope.pth", "wrong-shape": "fc.bias",
          "robustness-without-normalizer": "module.normalizer.new_mean"}


def test_bad_files_are_one_line_exit_4_and_nothing_is_registered(wd, capfd):
    files = _bad_files(wd)
    assert sorted(files) == sorted(BAD)
    for case in BAD:
        file, fmt, arch, extra = files[case]
        capfd.readouterr()
        rc = rtl("import", "--file", file, "--format", fmt, "--arch", arch, "--register-as", f"bad-{case}", *extra)
        err = capfd.readouterr().err.strip().splitlines()
        assert rc == 4, (case, rc, err)
        assert len(err) == 1 and err[0].startswith("error: ") and NEEDLE[case] in err[0], (case, err)
        assert not registered(f"bad-{case}"), case
    assert not (wd / "PWNED").exists()  # nothing was unpickled
    assert not MlflowClient().search_registered_models()
    assert {r.info.status for r in all_runs()} <= {"FAILED"}


# --- issue 28: every format shares the key-map path's class limit; a killed import leaves nothing -------------------
def _stride0_head(rows: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A [rows, features] head that weighs `features` floats in the file (stride 0): 50M rows are 102 GB if built."""
    return torch.zeros(1, features).expand(rows, -1), torch.zeros(1).expand(rows)


def _heads(wd: Path) -> dict[str, tuple[Path, str, str, list[str], int]]:
    """case -> (file, format, arch, extra args, classes its head asks for)."""
    from robust_transfer import create_model

    out = {}
    tv = torchvision.models.resnet18(num_classes=2).state_dict()
    for rows in (50_000_000, 500_000, 100_001, 1):
        sd = dict(tv)
        sd["fc.weight"], sd["fc.bias"] = _stride0_head(rows, 512)
        torch.save(sd, wd / f"tv-{rows}.pth")
        out[f"torchvision-{rows}"] = (wd / f"tv-{rows}.pth", "torchvision", "resnet18", [], rows)
    madry = dict(tv)
    madry["fc.weight"], madry["fc.bias"] = _stride0_head(500_000, 512)
    torch.save({"model": {**{f"module.model.{k}": v for k, v in madry.items()},
                          "module.normalizer.new_mean": torch.tensor(IMAGENET_MEAN),
                          "module.normalizer.new_std": torch.tensor(IMAGENET_STD)}}, wd / "madry-500k.ckpt")
    out["robustness-500000"] = (wd / "madry-500k.ckpt", "robustness", "resnet18", [], 500_000)
    wrn = WideResNet(depth=10, num_classes=2, widen_factor=1).state_dict()
    wrn["fc.weight"], wrn["fc.bias"] = _stride0_head(500_000, wrn["fc.weight"].shape[1])
    torch.save(wrn, wd / "rb-500k.pt")
    out["robustbench-500000"] = (wd / "rb-500k.pt", "robustbench", "wrn-10-1", [], 500_000)
    ours = create_model("small-cnn", 2).state_dict()
    ours["head.weight"], ours["head.bias"] = _stride0_head(200_000, ours["head.weight"].shape[1])
    torch.save(ours, wd / "km-200k.pt")
    (wd / "km.yaml").write_text("rename: []\n")
    out["keymap-200000"] = (wd / "km-200k.pt", "keymap", "small-cnn", ["--key-map", wd / "km.yaml"], 200_000)
    return out


def test_no_import_path_builds_a_head_over_100000_classes(wd, capfd):
    """The key-map path refused >100,000 classes with exit 2; the torchvision one asked for 102 GB (a stride-0 head
    of 50M rows) or registered 500,000 classes. Every format: exit 4 (a model problem, as documented), one line,
    before any model is built, nothing registered."""
    cases = _heads(wd)
    for case, (file, fmt, arch, extra, rows) in cases.items():
        assert file.stat().st_size < 50 << 20
        capfd.readouterr()
        rc = rtl("import", "--file", file, "--format", fmt, "--arch", arch, "--register-as", f"big-{case}", *extra)
        err = capfd.readouterr().err.strip().splitlines()
        assert rc == 4 and len(err) == 1, (case, rc, err)
        assert f"a head for {rows} classes; allowed: 2 to 100000 classes" in err[0], (case, err)
        assert not registered(f"big-{case}"), case
    assert len(cases) == 7 and {r.info.status for r in all_runs()} == {"FAILED"}


def _wait_for(predicate, proc, timeout=240, what=""):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"finished before {what}: {proc.stderr.read()[-2000:]}"
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_killed_import_leaves_no_temporary_folder_no_checkpoint_and_no_running_run(wd, monkeypatch):
    """`kill -9` of a real `rtl import` while its checkpoint is staged (written, not yet registered): nothing in
    --checkpoint-dir; its temporary folders and RUNNING run are cleaned up by the next import."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    tmp = wd / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    torch.save(torchvision.models.resnet50(num_classes=10).state_dict(), wd / "r50.pth")
    bin_dir = Path(sys.executable).parent
    victim = subprocess.Popen([str(bin_dir / "rtl"), "import", "--file", str(wd / "r50.pth"), "--format", "torchvision",
                               "--arch", "resnet50", "--register-as", "victim", "--checkpoint-dir", str(wd / "ck" / "r50")],
                              cwd=wd, env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staged = lambda: [p for p in (wd / "ck").glob(".r50.rtl-import-*/r50/meta.json")] if (wd / "ck").is_dir() else []  # noqa: E731
    _wait_for(staged, victim, what="the checkpoint to be staged")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (wd / "ck" / "r50").exists()                           # no complete checkpoint of an unregistered model
    assert [p.name.startswith(".r50.rtl-import-") for p in (wd / "ck").iterdir()] == [True]
    assert [p.name for p in tmp.iterdir() if p.name.startswith("rtl-import-")]   # (what kill -9 leaves, until ...)
    killed = [r for r in all_runs() if r.data.tags.get("rtl.strategy") == "import"]
    assert [r.info.status for r in killed] == ["RUNNING"] and not registered("victim")

    # ... the next import: a successful one, into the same place
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), wd / "r18.pth")
    assert rtl("import", "--file", wd / "r18.pth", "--format", "torchvision", "--arch", "resnet18",
               "--register-as", "next", "--checkpoint-dir", wd / "ck" / "r50") == 0
    assert sorted(p.name for p in (wd / "ck").iterdir()) == ["r50"]   # the checkpoint, moved in once registered
    assert sorted(p.name for p in (wd / "ck" / "r50").iterdir()) == ["meta.json", "model.safetensors"]
    assert not [p for p in tmp.iterdir() if p.name.startswith("rtl-import-")]
    assert MlflowClient().get_run(killed[0].info.run_id).info.status == "KILLED"
    assert registered("next") and not registered("victim")

