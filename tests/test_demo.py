"""`make demo` end to end, at a tiny scale on real-format data: every step runs and the table prints."""
import pytest

from robust_transfer.demo import main


@pytest.mark.slow
def test_demo_runs_every_step_and_prints_the_table(workdir, tmp_path, capsys):
    from support.synthetic import write_imagefolder

    data = write_imagefolder(tmp_path / "six", n_classes=6, n_train=12, n_test=8)
    argv = ["--source", f"imagefolder:{data}:half-a", "--target", f"imagefolder:{data}:half-b", "--per-class", "8",
            "--target-per-class", "8", "--epochs", "1", "--head-epochs", "2", "--lwf-iterations", "3",
            "--trials", "2", "--n-examples", "12", "--progress", "false"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for row in ("natural source", "fgsm-rs source", "transfer ← natural", "transfer ← fgsm-rs", "lwf ← fgsm-rs",
                "champion (loaded)"):
        assert row in out
    assert "Pareto front" in out and "loaded models:/demo-lwf@champion → ImageClassifier" in out
    assert (workdir / "optuna.db").exists() and (workdir / "mlflow.db").exists()
