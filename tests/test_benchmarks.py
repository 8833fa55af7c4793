"""Benchmarks: every bench function runs at tiny sizes and returns well-formed rows (no timing assertions)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import bench_attacks  # noqa: E402
import bench_data  # noqa: E402
import bench_memory  # noqa: E402
import bench_train  # noqa: E402
import gpu  # noqa: E402
import run_all  # noqa: E402


def well_formed(rows):
    assert rows
    for r in rows:
        assert isinstance(r, benchlib.Row) and r.name and r.section
        assert r.status in ("PASS", "FAIL", "info", "n/a")
        if r.target is not None:
            assert r.better in ("<=", ">=")
        if r.value is not None:
            assert math.isfinite(r.value) and r.value > 0, r
        if r.alt is not None:
            assert math.isfinite(r.alt) and r.alt > 0, r
        r.value_text(), r.target_text(), r.as_dict()


def test_row_status():
    assert benchlib.Row("S", "a", "", 0.5, 1.0, "<=").status == "PASS"
    assert benchlib.Row("S", "a", "", 1.5, 1.0, "<=").status == "FAIL"
    assert benchlib.Row("S", "a", "", 3.0, 2.5, ">=").status == "PASS"
    assert benchlib.Row("S", "a", "", 3.0).status == "info"
    assert benchlib.Row("S", "a", "", None, 0.05, "<=", note="n/a (not yet built)").status == "n/a"


def test_interleaved_records_both_clocks():
    calls = []
    tm = benchlib.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]   # warm-up, then the order rotates
    assert len(tm.wall["a"]) == len(tm.cpu["b"]) == 3
    assert tm.ratio("a", "b") > 0 and tm.other_ratio("a", "b") > 0


def test_train_benches_tiny():
    rows, raw = bench_train.mfu(archs=(("small-cnn", 2, None), ("wrn-10-1", 2, ())), repeats=1, peak_n=64,
                                compile_arm=False)
    well_formed(rows)
    assert {c["config"] for c in raw["configs"] if c["arch"] == "small-cnn"} >= {"NCHW/1t", "NHWC/1t"}
    assert all(c["gflops"] > 0 for c in raw["configs"])
    rows, _ = bench_train.free_vs_natural(batch=2, replay=2, repeats=1)
    well_formed(rows)
    s = bench_train.train_scaling(batch=2, counts=(1, 2))
    assert len(s["seconds"]) == 2 and all(t > 0 for t in s["seconds"])


def test_free_training_step_makes_replay_updates():
    tr = bench_train.Trainer("small-cnn", 2, torch.channels_last, mode="free", replay=3)
    before = [p.detach().clone() for p in tr.model.parameters()]
    tr()
    assert tr.objective.updates_per_batch == 3 and tr.objective.delta is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.model.parameters()))


def test_attack_benches_tiny():
    torch.manual_seed(0)
    model = bench_attacks.create_model("small-cnn", 10).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    rows, raw = bench_attacks.pgd_rows(model, x, y, repeats=1, with_art=True)
    well_formed(rows)
    assert raw["pgd20_acc_early_exit"] <= raw["pgd20_acc_plain"]
    assert raw["forward_images_ee"] <= raw["forward_images_plain"]
    assert raw["bare_over_bare_folded"] > 0 and "bare_folded" in raw
    assert "l2" in raw and 0 <= raw["pgd20_acc_l2"] <= 1                   # the ℓ2 row beside the ℓ∞ one (issue 25)
    assert any(r.name == "PGD-20 ℓ2 evaluation, plain ÷ bare cost" and r.value > 0 for r in rows)
    rows, raw = bench_attacks.as_loaded_rows(model.to(memory_format=torch.channels_last), x, y, repeats=1)
    well_formed(rows)
    assert set(raw) == {"plain", "art", "bare"}
    s = bench_attacks.pgd_scaling(model, x, y, steps=(1, 2))
    assert len(s["plain_s"]) == len(s["ee_s"]) == 2


def test_memory_bench_tiny(workdir, tiny_folder):
    for kind in ("transfer", "lwf"):
        s = bench_memory.series(kind, trials=2, target=f"imagefolder:{tiny_folder}", per_class=2, checkpoints=(1, 2))
        assert s["trials"] == [1, 2] and all(p > 0 for p in s["peak_mib"] + s["rss_mib"])
        assert s["peak_mib"][1] >= s["peak_mib"][0]             # a high-water mark never falls
        row = bench_memory.row_of(s)
        well_formed([row])
        assert row.section == "Memory" and row.target == bench_memory.BOUND


def test_attack_floor_freezes_and_restores_parameters():
    model = bench_attacks.create_model("small-cnn", 10).eval()
    x, y = torch.rand(2, 3, 32, 32), torch.randint(0, 10, (2,))
    bench_attacks.bare_pgd_cost(model, x, y, steps=1)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_data_benches_tiny(workdir, tiny_folder):
    rows, _ = bench_data.loader_vs_training(bench_data.training_data(quick=True), batch=4, loader_batches=2, repeats=1)
    well_formed(rows)
    cache_before = __import__("os").environ.get("RTL_CACHE_DIR")
    rows, raw = bench_data.decode_cache(f"imagefolder:{tiny_folder}", repeats=1)
    well_formed(rows)
    assert __import__("os").environ.get("RTL_CACHE_DIR") == cache_before   # restored
    assert raw["first_wall_s"] > 0


def test_gpu_inner_functions_on_cpu():
    r = gpu.train_throughput("small-cnn", 2, device="cpu", precision="bf16", channels_last=True, steps=1, warmup=1,
                             repeats=1)
    assert r["img_s"] > 0
    assert gpu.pgd_throughput("small-cnn", 2, device="cpu", precision="fp32", steps=1, repeats=1)["img_s"] > 0
    assert gpu.matmul_peak("cpu", torch.float32, n=32, reps=1) > 0
    assert gpu.flops_per_image("small-cnn", "cpu", "fp32", True) > 0
    out = gpu.run("cpu", archs=(("small-cnn", 2),), configs=(("fp32", True, True), ("bf16", True, False)), steps=1,
                  pgd_batch=2, peak_n=32)
    assert out["train"][0]["mfu_bf16_peak"] > 0 and out["pgd"]
    assert [r["data"] for r in out["train"]] == ["on device", "streamed"]
    assert {r["precision"] for r in out["pgd"]} == {"fp32", "bf16"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_gpu_script_skips_without_cuda():
    out = subprocess.run([sys.executable, str(BENCH / "gpu.py")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0
    assert "skipped" in out.stdout and len(out.stdout.strip().splitlines()) == 1


def test_docs_keep_other_engineers_sections(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\nold preamble\n\n## Training\nold training\n\n## Transfer\ntheirs: 70x\n\n"
                    "## Machine\nold machine\n\n## Search\nsearch table\n")
    new = run_all.compose(path, "# Benchmarks\nnew preamble\n", {"Machine": "## Machine\nnew machine\n",
                                                                 "Training": "## Training\nnew training\n"})
    assert "old" not in new and "new preamble" in new and "new machine" in new
    assert "## Transfer\ntheirs: 70x\n" in new and "## Search\nsearch table\n" in new
    assert new.index("## Machine") < new.index("## Training") < new.index("## Transfer") < new.index("## Search")


def test_foreign_rows_accepts_dicts():
    class Mod:
        @staticmethod
        def rows(quick=False):
            return [{"name": "head search", "value": 0.02, "target": 0.05, "better": "<="}]

    rows, _ = run_all.foreign_rows(Mod, "Search", quick=True)
    assert rows[0].section == "Search" and rows[0].status == "PASS"


@pytest.mark.slow
def test_run_all_quick_end_to_end(tmp_path):
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n\n## Evaluation\ntheirs\n")
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "train,attacks,data,memory,gpu",
                          "--docs", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "training step MFU" in out.stdout and "PGD-20 evaluation" in out.stdout
    md = (tmp_path / "benchmarks.md").read_text()
    assert "peak RSS growth over trials" in out.stdout
    for section in ("## Machine", "## Training", "## Attacks", "## Data", "## Memory", "## Scaling", "## GPU",
                    "## Evaluation\ntheirs"):
        assert section in md
    assert (tmp_path / "bench_pgd_steps.png").stat().st_size > 0 and (tmp_path / "benchmarks.json").is_file()
    assert (tmp_path / "bench_memory_trials.png").stat().st_size > 0


@pytest.mark.slow
def test_wait_policy_children_run():
    rows, res = bench_train.wait_policy(batch=2, steps=1)
    well_formed(rows)
    assert set(res) == {"default", "PASSIVE"}


def test_benchmark_plots_are_saved_at_150_dpi(tmp_path):
    from PIL import Image

    raw = {"attacks": {"pgd_scaling": {"n": 4, "steps": [1, 2], "plain_s": [0.1, 0.2], "ee_s": [0.05, 0.1]}},
           "transfer": {"cached_s": {2: 0.1, 4: 0.2}, "uncached_s": {2: 1.0}}}
    made = run_all.plots(raw, tmp_path)
    assert set(made) == {"pgd", "transfer"}
    for name in made.values():
        with Image.open(tmp_path / name) as im:
            assert min(im.info["dpi"]) >= 149.5 and im.size[0] >= 4.2 * 150 - 1, (name, im.info, im.size)


def test_issue_26_rows_bf16_and_mfu_per_precision():
    import bench_scale

    rows, raw = bench_train.bf16_vs_fp32(archs=(("cnn4", 2),), repeats=1)
    assert len(rows) == 1 and rows[0].value > 0 and raw["auto"] in ("fp32", "bf16")
    rows, raw = bench_scale.bf16_mfu(batch=2, repeats=1, peak_n=64)
    assert [r.name.split(", ")[-1] for r in rows] == ["fp32 vs the fp32 matmul peak", "bf16 vs the bf16 matmul peak"]
    assert all(r.value > 0 for r in rows)
