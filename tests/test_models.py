"""Models: the registry, normalisation inside, features/head/blocks, heads."""
import pytest
import torch

from robust_transfer import create_model
from robust_transfer.errors import ConfigError
from robust_transfer.models import CIFAR_MEAN, HeadSpec, list_archs

# arch → (blocks, feature dim, parameter count in millions rounded to 0.01)
ARCHS = {
    "small-cnn": (5, 128, 0.10),
    "cnn4": (5, 256, 0.39),          # the cpu scale's source architecture (issue 18)
    "wrn-16-4": (8, 256, 2.75),
    "preact-resnet18": (10, 512, 11.17),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_shapes_blocks_and_size(arch):
    n_blocks, dim, mparams = ARCHS[arch]
    model = create_model(arch, 10).eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.features(x).shape == (2, dim)
    assert len(model.blocks()) == n_blocks
    assert model.blocks()[-1] is model.head
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == mparams


def test_wrn_32_10_is_madrys_network_with_the_papers_17_blocks():
    model = create_model("wrn-32-10", 100)
    assert len(model.blocks()) == 17  # paper Fig. 2
    assert model.feature_dim == 640
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 46.2


def test_resnet50_at_224():
    model = create_model("resnet50", 10, input_size=224).eval()
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 10)
    assert model.feature_dim == 2048


def test_normalisation_is_inside_the_model():
    model = create_model("small-cnn", 3).eval()
    x = torch.full((1, 3, 32, 32), 0.5)
    expected = (0.5 - CIFAR_MEAN[0]) / model.std.flatten()[0]
    assert torch.allclose(model.normalize(x)[0, 0, 0, 0], expected)
    body_out = model.body(model.normalize(x))
    assert torch.equal(model.features(x), body_out)


def test_head_forward_equals_head_of_features():
    model = create_model("small-cnn", 4).eval()
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(model(x), model.head(model.features(x)))


@pytest.mark.parametrize("depth,bn,dropout,n_linear,n_bn,n_drop", [
    (0, False, 0.0, 1, 0, 0), (1, False, 0.0, 2, 0, 0), (2, True, 0.0, 3, 2, 0), (3, True, 0.3, 4, 3, 3)])
def test_mlp_head_structure(depth, bn, dropout, n_linear, n_bn, n_drop):
    spec = HeadSpec("mlp", mlp_depth=depth, width=64, dropout=dropout, batch_norm=bn)
    model = create_model("small-cnn", 7, head=spec).eval()
    mods = list(model.head.modules())
    assert sum(isinstance(m, torch.nn.Linear) for m in mods) == n_linear
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in mods) == n_bn
    assert sum(isinstance(m, torch.nn.Dropout) for m in mods) == n_drop
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(arch="vgg16", num_classes=10), "arch='vgg16'"),
    (dict(arch="wrn-17-4", num_classes=10), "depth=17"),
    (dict(arch="small-cnn", num_classes=1), "num_classes=1"),
    (dict(arch="small-cnn", num_classes=10, head=None, input_size=4), "input_size=4"),
])
def test_bad_model_requests_say_what_is_wrong(kwargs, needle):
    arch = kwargs.pop("arch")
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        create_model(arch, **kwargs)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kind="transformer"), "head='transformer'"), (dict(kind="mlp", dropout=1.0), "dropout=1.0"),
    (dict(kind="mlp", mlp_depth=-1), "mlp_depth=-1")])
def test_bad_head_specs(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        HeadSpec(**kwargs)


def test_list_archs_names_the_families():
    assert {"small-cnn", "preact-resnet18", "resnet50", "wrn-<depth>-<width>"} <= set(list_archs())


@pytest.mark.parametrize("arch", ["small-cnn", "wrn-10-2", "preact-resnet18"])
def test_channels_last_gives_the_same_logits(arch):
    torch.manual_seed(0)
    model = create_model(arch, 10).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["small-cnn", "cnn4", "wrn-10-2", "preact-resnet18"])
def test_attack_view_folds_batchnorm_into_the_same_function(arch):
    from robust_transfer.attacks import fold

    torch.manual_seed(0)
    model = create_model(arch, 10, head=HeadSpec("mlp", mlp_depth=1, width=32, batch_norm=True)).eval()
    for m in model.modules():   # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    # float64: folding is an algebraic identity, so the check must not depend on this host's fp32
    # conv kernels (on AVX2 hosts the fp32 input-gradients differed by 0.7% relative through ReLUs
    # that sit near zero; in float64 they agree to better than 1e-8).
    model = model.double()
    view = fold.attack_view(model)
    assert view is not model and fold._CACHE[model].pairs                  # something was folded
    mods = dict(view.named_modules())
    bn_calls = [n for n in view.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], torch.nn.BatchNorm2d)]
    assert len(bn_calls) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) - len(fold._CACHE[model].pairs)
    x, y = torch.rand(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x), rtol=1e-4, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
    xg = x.clone().requires_grad_(True)
    (g_view,) = torch.autograd.grad(torch.nn.functional.cross_entropy(view(xg), y, reduction="sum"), xg)
    assert ((g_view - g_ref).norm() / g_ref.norm()) < 1e-8
