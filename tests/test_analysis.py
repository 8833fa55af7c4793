"""`analyze`: input gradients (Fig. 5) and feature distances under augmentation (Fig. 7), exact on tiny
tensors; `rtl analyze` and `mlflow run . -e analyze` end to end on tiny checkpoints; bad input."""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from support.transfer import BIN, REPO, all_runs, make_source, mlflow_env, rtl


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpts(tiny_folder, tmp_path_factory):
    """Untrained small-cnn checkpoints on the tiny 3-class 16×16 folder: 16×16 and 32×32 inputs."""
    root = tmp_path_factory.mktemp("analysis-models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTL_CACHE_DIR", str(root / "cache"))
        a = make_source(root / "a", tiny_folder, train=False, seed=0)
        b = make_source(root / "b32", tiny_folder, train=False, seed=1, input_size=32)
    return str(a), str(b)


@pytest.fixture
def tracked(wd) -> Path:
    """`workdir` with a pre-created MLflow store (conftest `wd`)."""
    return wd


def _artifacts(run_id: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    return {a.path for a in MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).list_artifacts(run_id)}


# ------------------------------------------------------------------------------------ input gradients
def _linear_model(w: torch.Tensor) -> nn.Module:
    """Features = the identity on a 1-channel 1×2 image; logits = W x (no bias)."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return nn.Sequential(nn.Flatten(), lin)


def test_input_gradient_equals_the_hand_computed_one():
    from robust_transfer.analysis import input_gradients

    w = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]])
    x = torch.tensor([[[[0.2, 0.7]]], [[[0.9, 0.1]]]])           # [2, 1, 1, 2]
    y = torch.tensor([1, 2])
    g = input_gradients(_linear_model(w), x, y)
    # ∂CE/∂x = Wᵀ (softmax(W x) − onehot(y)), per image
    p = torch.softmax(x.flatten(1) @ w.t(), dim=1)
    expected = ((p - torch.nn.functional.one_hot(y, 3).float()) @ w).view_as(x)
    torch.testing.assert_close(g, expected)
    torch.testing.assert_close(input_gradients(_linear_model(w), x, y, batch_size=1), expected)  # per image


def test_gradient_is_taken_in_eval_mode_and_moves_nothing():
    from robust_transfer.analysis import input_gradients

    bn = nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(4.0)
    w = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    model = nn.Sequential(bn, _linear_model(w)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.tensor([[[[0.2, 0.6]]], [[[0.8, 0.4]]]]), torch.tensor([0, 1])
    g = input_gradients(model, x, y)
    assert model.training and bn.training                      # mode restored
    for k, v in model.state_dict().items():                    # running stats (and weights) unchanged
        torch.testing.assert_close(v, before[k])
    assert all(p.grad is None for p in model.parameters())     # only ∂loss/∂x was computed
    # eval mode: x → (x − 0.3)/2 (BatchNorm with its running statistics; affine is the identity)
    p = torch.softmax(((x.flatten(1) - 0.3) / (4.0 + bn.eps) ** 0.5) @ w.t(), dim=1)
    expected = ((p - torch.nn.functional.one_hot(y, 2).float()) @ w / (4.0 + bn.eps) ** 0.5).view_as(x)
    torch.testing.assert_close(g, expected)


def test_out_of_range_labels_are_a_model_error():
    from robust_transfer.analysis import input_gradients
    from robust_transfer.errors import ModelError

    with pytest.raises(ModelError, match="label 3 is out of range for a model with 2 outputs"):
        input_gradients(_linear_model(torch.eye(2)), torch.zeros(1, 1, 1, 2), torch.tensor([3]))


def test_display_scaling_and_edge_alignment():
    from robust_transfer.analysis import gradient_display, perceptual_alignment
    from robust_transfer.analysis.gradients import edge_magnitude

    g = torch.tensor([[[[-2.0, 0.0], [1.0, 2.0]]]])
    torch.testing.assert_close(gradient_display(g), torch.tensor([[[[0.0, 0.5], [0.75, 1.0]]]]))
    assert gradient_display(torch.zeros(1, 3, 2, 2)).eq(0.5).all()
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, :, 4:] = 1.0                                        # a vertical edge
    edges = edge_magnitude(x)
    aligned = edges.unsqueeze(1).expand(-1, 3, -1, -1) * torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(perceptual_alignment(aligned, x), torch.ones(2))   # sign-free: magnitudes
    assert perceptual_alignment(torch.randn(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)).eq(0).all()  # no edges


def test_grid_has_the_images_then_one_row_per_model():
    from robust_transfer.analysis import gradient_grid_figure

    x = torch.rand(3, 3, 8, 8)
    rows = [("natural", torch.randn(3, 3, 8, 8)), ("robust", torch.randn(3, 3, 16, 16))]
    fig = gradient_grid_figure(x, rows)
    assert len(fig.axes) == (1 + 2) * 3
    assert [fig.axes[r * 3].get_ylabel() for r in range(3)] == ["images", "natural", "robust"]


def test_grid_refuses_no_images_and_a_row_of_another_length_with_a_data_error():
    """(It raised NameError: DataError was not imported; ruff's F821 found it.)"""
    from robust_transfer.analysis import gradient_grid_figure
    from robust_transfer.errors import DataError

    with pytest.raises(DataError, match="at least one image"):
        gradient_grid_figure(torch.rand(0, 3, 8, 8), [])
    with pytest.raises(DataError, match="'natural' has 2 gradients for 3 images"):
        gradient_grid_figure(torch.rand(3, 3, 8, 8), [("natural", torch.randn(2, 3, 8, 8))])


# ------------------------------------------------------------------------------------ feature distance
def test_feature_distance_is_zero_when_augmentation_is_the_identity_and_seeded():
    from robust_transfer import create_model
    from robust_transfer.analysis import feature_distance_summary, feature_distances

    torch.manual_seed(0)
    model = create_model("small-cnn", 3, input_size=16).eval()
    black = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)        # zero padding + crop + flip leave it black
    assert feature_distances(model, black, seed=0).eq(0).all()
    imgs = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    d0 = feature_distances(model, imgs, seed=0)
    assert (d0 > 0).all()
    assert torch.equal(d0, feature_distances(model, imgs, seed=0, batch_size=4))   # seeded, batch-independent
    assert not torch.equal(d0, feature_distances(model, imgs, seed=1))
    res = feature_distance_summary(model, imgs, seed=0)
    assert (res.partners != torch.arange(6)).all() and res.between_images.gt(0).all()
    m = res.metrics()
    assert m["feature_distance_mean"] == pytest.approx(d0.mean().item())
    assert set(m) == {"feature_distance_mean", "feature_distance_median", "feature_norm_mean",
                      "feature_distance_between_images_mean"}


# ------------------------------------------------------------------------------------ rtl analyze
Q = ["--progress", "false"]


def test_rtl_analyze_gradients_end_to_end(tracked, ckpts, capsys):
    a, b32 = ckpts     # b32 takes 32×32 inputs: the 16×16 images are resized for it
    assert rtl("analyze", "--what", "gradients", "--model", f"{a},{b32}", "--labels", "natural src,robust src",
               "--n-images", "4", "--grid-images", "2", *Q) == 0
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["rtl.strategy"] == "analyze"
    assert run.data.tags["rtl.model"] == f"{a},{b32}" and run.data.tags["rtl.data"].startswith("imagefolder:")
    m = run.data.metrics
    assert set(m) == {"grad_edge_corr_natural_src", "grad_edge_corr_robust_src",
                      "grad_l2_mean_natural_src", "grad_l2_mean_robust_src"}
    assert all(-1 <= m[f"grad_edge_corr_{k}"] <= 1 and m[f"grad_l2_mean_{k}"] > 0 for k in ("natural_src", "robust_src"))
    assert _artifacts(run.info.run_id) == {"gradients.png", "gradients.csv"}
    from mlflow.artifacts import download_artifacts

    rows = list(csv.DictReader(open(download_artifacts(run_id=run.info.run_id, artifact_path="gradients.csv",
                                                       tracking_uri=os.environ["MLFLOW_TRACKING_URI"]))))
    assert len(rows) == 8 and {r["model_label"] for r in rows} == {"natural src", "robust src"}
    # the numbers are over all 4 images, though the picture shows 2 (a claim reads them: Fig. 5 on 1,000 images)
    for key in ("natural_src", "robust_src"):
        mine = [float(r["grad_edge_corr"]) for r in rows if r["metric_key"] == key]
        assert len(mine) == 4 and m[f"grad_edge_corr_{key}"] == pytest.approx(sum(mine) / 4, abs=1e-5)
    from PIL import Image

    with Image.open(download_artifacts(run_id=run.info.run_id, artifact_path="gradients.png",
                                       tracking_uri=os.environ["MLFLOW_TRACKING_URI"])) as im:
        width_in = im.size[0] / im.info["dpi"][0]
    assert width_in == pytest.approx(1.2 + 1.3 * 2, abs=0.05)     # gradient_grid_figure: 1.2 + 1.3 per column
    assert "grad_edge_corr_natural_src" in capsys.readouterr().out


def test_rtl_analyze_feature_distance_end_to_end(tracked, ckpts):
    assert rtl("analyze", "--what", "feature-distance", "--model", ckpts[0], "--split", "train",
               "--n-images", "20", "--seed", "3", *Q) == 0
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.params["split"] == "train"
    m = run.data.metrics
    assert set(m) == {"feature_distance_mean", "feature_distance_median", "feature_norm_mean",
                      "feature_distance_between_images_mean"}
    assert m["feature_distance_mean"] > 0 and m["feature_norm_mean"] > 0
    assert _artifacts(run.info.run_id) == {"feature_distance.png", "feature_distance.csv"}
    from mlflow.artifacts import download_artifacts
    from PIL import Image

    png = download_artifacts(run_id=run.info.run_id, artifact_path="feature_distance.png",
                             tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    with Image.open(png) as im:                               # a figure people read: >= 150 dpi
        assert min(im.info["dpi"]) >= 149.5 and im.size[0] >= 5.5 * 150 - 1


@pytest.mark.parametrize("argv, code, fragment", [
    (["--what", "saliency", "--model", "X"], 2, "what='saliency' is not allowed; choose one of: gradients, feature-distance"),
    (["--model", "A,B", "--labels", "one"], 2, "labels='one' gives 1 label(s) for 2 models"),
    (["--model", "missing-dir"], 4, "model 'missing-dir' does not exist"),
    (["--what", "feature-distance", "--model", "A,B"], 2, "what=feature-distance takes exactly one model"),
    (["--model", "{a}", "--grid-images", "999"], 2, "grid_images=999 is out of range; allowed: [1, 64]"),
    (["--model", "{a}", "--n-images", "4", "--grid-images", "5"], 2, "grid_images=5 is more than n_images=4"),
    (["--what", "feature-distance", "--model", "{a}", "--grid-images", "4"], 2, "grid_images=4 is for what=gradients"),
    (["--model", "{a}", "--dataset", "imagefolder:{other}"], 4, "has 3 classes but dataset="),
])
def test_bad_input_is_one_line_and_the_right_exit_code(tracked, ckpts, other_folder, capsys, argv, code, fragment):
    argv = [s.format(a=ckpts[0], other=other_folder) for s in argv]
    assert rtl("analyze", *argv, *Q) == code
    err = capsys.readouterr().err
    assert fragment.format(a=ckpts[0]) in err and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1
    # a bad value stops before any run starts; a bad model fails the run it started
    assert [r.info.status for r in all_runs()] == (["FAILED"] if code == 4 else [])


@pytest.mark.slow
def test_mlflow_run_analyze_entry_point(tracked, ckpts):
    cmd = [str(BIN / "mlflow"), "run", str(REPO), "-e", "analyze", "--env-manager", "local",
           "-P", f"model={ckpts[0]},{ckpts[1]}", "-P", "labels=natural src,robust src", "-P", "n_images=3",
           "-P", "device=cpu"]
    out = subprocess.run(cmd, env=mlflow_env(tracked), cwd=tracked, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["rtl.strategy"] == "analyze"
    # (the `mlflow run` launcher logs the parameter shell-quoted, before rtl starts: 'natural src,robust src')
    assert {"grad_edge_corr_natural_src", "grad_edge_corr_robust_src"} <= set(run.data.metrics)
    assert "gradients.png" in _artifacts(run.info.run_id)


# ------------------------------------------------------------------------------------ figures people read
ALIASED = "models:/cpu-src-large-robust@s-70384ae095ba5164"      # how a suite step names its source model


def _texts_inside(fig) -> list[str]:
    """Draw `fig` and return the texts of its titles (figure and axes) and legend, asserting each lies
    within the figure's bounding box: nothing cut off."""
    fig.canvas.draw()
    r, box = fig.canvas.get_renderer(), fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    shown = [t for t in texts if t.get_text()]
    for t in shown:
        e = t.get_window_extent(r)
        assert box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1 and box.y0 - 1 <= e.y0 and e.y1 <= box.y1 + 1, \
            f"{t.get_text()!r} is cut off: {e} outside the figure {box}"
    return [t.get_text() for t in shown]


def test_readable_label_drops_the_suite_alias_and_keeps_user_aliases():
    from robust_transfer.analysis.plots import readable_label

    assert readable_label(ALIASED) == "cpu-src-large-robust"
    assert readable_label("models:/src@champion") == "src@champion"
    assert readable_label("…t-large-robust@s-70384ae095ba5164") == "…t-large-robust"
    assert readable_label("natural src") == "natural src"


def test_feature_distance_title_fits_and_names_the_model_not_its_alias():
    from robust_transfer.analysis import feature_distance_figure, feature_distance_summary
    from robust_transfer.analysis.feature_distance import feature_distance_title
    from robust_transfer import create_model

    torch.manual_seed(0)
    model = create_model("small-cnn", 3, input_size=16).eval()
    res = feature_distance_summary(model, torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), seed=0)
    title = feature_distance_title(ALIASED, "tiny-imagenet-with-a-long-name:classes=0-199:train", 1000)
    (suptitle, *_) = _texts_inside(feature_distance_figure(res, title=title))
    assert "cpu-src-large-robust" in suptitle and "@s-" not in suptitle and "70384ae0" not in suptitle
    assert "\n" in suptitle                                   # wrapped to fit, the formula on its own line


def test_line_figure_one_colour_per_source_one_style_per_metric_and_titles_fit():
    """Fig. 1: a source's clean and PGD-20 lines share its colour and differ in line style; its reference
    line (the frozen model) has the source's colour too; a long title is wrapped inside the figure."""
    import pandas as pd
    from robust_transfer.analysis.plots import POINT_COLUMNS, plot_lines

    rows = [(s, m, k, 0.1 * k + (0.3 if m == "clean_acc" else 0), "step", "run")
            for s in ("robust CIFAR-10 source", "robust Tiny-IN-200 source") for m in ("pgd20_acc", "clean_acc")
            for k in (1, 2, 3)]
    hlines = pd.DataFrame([("CIFAR-10 source, all frozen", "pgd20_acc", 0.27, "a", "r"),
                           ("Tiny-IN-200 source, all frozen", "pgd20_acc", 0.03, "b", "r")],
                          columns=["label", "metric", "y", "step", "run_id"])
    title = "Clean and PGD-20 accuracy after re-training the k deepest blocks of " + ALIASED + " " + "and more " * 8
    fig = plot_lines(pd.DataFrame(rows, columns=POINT_COLUMNS), hlines, title=title, x="k", note="paper note " * 30)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    colour = {s: {lines[f"{s}: {m}"].get_color() for m in ("PGD-20", "clean")}
              for s in ("robust CIFAR-10 source", "robust Tiny-IN-200 source")}
    assert all(len(c) == 1 for c in colour.values())                       # one colour per source
    assert len(set.union(*colour.values())) == 2                           # distinct between sources
    for s in colour:
        assert lines[f"{s}: PGD-20"].get_linestyle() != lines[f"{s}: clean"].get_linestyle()
    assert lines["CIFAR-10 source, all frozen (PGD-20)"].get_color() == colour["robust CIFAR-10 source"].pop()
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert legend["robust CIFAR-10 source: clean"].get_color() == legend["robust CIFAR-10 source: PGD-20"].get_color()
    texts = _texts_inside(fig)
    assert not any("@s-" in t for t in texts)


def test_saved_figures_are_at_least_150_dpi(tmp_path):
    import pandas as pd
    from PIL import Image
    from robust_transfer.analysis.plots import POINT_COLUMNS, plot_bars, save_figure

    pts = pd.DataFrame([("a", "clean_acc", 10, 0.5, "s", "r")], columns=POINT_COLUMNS)
    fig = plot_bars(pts, title="t")
    with Image.open(save_figure(fig, tmp_path / "f.png")) as im:
        assert min(im.info["dpi"]) >= 149.5
        assert im.size[0] >= fig.get_figwidth() * 150 - 1
