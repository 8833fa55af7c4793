"""Data-parallel training under torchrun (issue 26): two gloo ranks on the CPU give the parameters of one
process with the same global batch; one MLflow run with world_size; a killed rank fails the job cleanly and
--resume continues it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent   # support/ddp_worker.py: what each torchrun rank runs
PLATFORM = TESTS.parent / "platform"
# fp32, 6 SGD updates: the two ranks' gradients are summed in another order than one process sums its batch,
# so the parameters agree to float rounding, not bit for bit (measured max |Δ| 1.5e-8, parameters up to 0.49)
TOLERANCE = 1e-5


def _env(workdir: Path) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(PLATFORM), str(TESTS)])}


def _torchrun(workdir: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", *args], cwd=workdir,
                            env=_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _worker(workdir, folder, out, mode, *extra, ranks=2):
    args = [str(TESTS / "support" / "ddp_worker.py"), str(folder), str(workdir / out), mode, *extra]
    if ranks == 1:
        p = subprocess.run([sys.executable, *args], cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                           timeout=600)
    else:
        proc = _torchrun(workdir, *args)
        stdout, stderr = proc.communicate(timeout=600)
        p = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert p.returncode == 0, p.stderr[-3000:]
    return torch.load(workdir / out)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# free: each rank carries the δ of its own share; a δ step is the sign of the input gradient per example, which
# a share's mean loss scales but does not turn, so free training also matches one process (measured 1.5e-8)
@pytest.mark.parametrize("mode", ["natural", pytest.param("free", marks=pytest.mark.slow)])
def test_two_gloo_ranks_train_the_parameters_of_one_process_with_the_same_global_batch(workdir, tiny_folder, mode):
    one = _worker(workdir, tiny_folder, "one.pt", mode, ranks=1)
    two = _worker(workdir, tiny_folder, "two.pt", mode)
    diff = _max_diff(one, two)
    assert diff <= TOLERANCE, diff
    fresh = _worker(workdir, tiny_folder, "fresh.pt", mode, "iterations=1", ranks=1)
    assert _max_diff(one, fresh) > 100 * TOLERANCE   # (training moved them: the comparison can fail)


def test_distributed_pieces_in_one_process():
    from robust_transfer import distributed
    from robust_transfer.distributed import Ranks

    assert distributed.current() == Ranks() and not Ranks().parallel   # pytest: one process, nothing joined
    # shares of a batch cover it once, contiguously, in rank order (uneven: the first ranks one larger)
    for n, world in ((16, 2), (17, 2), (10, 3)):
        parts = [distributed.share(n, Ranks(r, world)) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1
    with pytest.raises(Exception, match="does not split evenly over 2 ranks"):
        distributed.check_batch(15, Ranks(0, 2))
    distributed.check_batch(15, Ranks())
    gathered = {"free.delta": torch.zeros(1), "rank1.free.delta": torch.ones(1)}
    assert distributed.own_state(gathered, Ranks(1, 2))["free.delta"].item() == 1
    assert list(distributed.own_state(gathered, Ranks(0, 2))) == ["free.delta"]


def _train_args(folder, ckpt, *extra):
    return [str(BIN / "rtl"), "train", "--dataset", f"imagefolder:{folder}", "--epochs", "6", "--batch-size", "16",
            "--mode", "free", "--replay", "2", "--n-examples", "6", "--eval-steps", "1", "--progress", "false",
            "--device", "cpu", "--checkpoint-dir", ckpt, *extra]


def _epochs_done(ckpt: Path) -> int:
    try:
        return json.loads((ckpt / "train_state.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return 0


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_cleanly_and_resume_continues_its_run(workdir, tiny_folder, capfd):
    job = _torchrun(workdir, *_train_args(tiny_folder, "ck"))
    deadline = time.time() + 400
    while _epochs_done(workdir / "ck") < 2 and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    assert job.poll() is None, "training finished before a rank could be killed"
    ranks = _children(job.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGKILL)   # one rank (a process this test started, through torchrun) dies
    _, stderr = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "error: " in stderr and "internal error" not in stderr, stderr[-3000:]   # one line from rank 0

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["rtl.world_size"] == "2"
    killed_at = _epochs_done(workdir / "ck")
    assert 2 <= killed_at < 6

    resumed = _torchrun(workdir, *_train_args(tiny_folder, "ck", "--resume", "true"))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1   # the resumed job continued the failed run: still one run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["rtl.resumed_from_epoch"] == str(killed_at)
    assert run.data.tags["rtl.world_size"] == "2" and _epochs_done(workdir / "ck") == 6
    # the checkpoint holds each rank's own carried δ (free training), and one process cannot resume it
    state = json.loads((workdir / "ck" / "train_state.json").read_text())
    assert state["world_size"] == 2
    from robust_transfer.cli import main
    capfd.readouterr()
    assert main(_train_args(tiny_folder, "ck", "--resume", "true")[1:]) == 4   # (the same fingerprint: "ck")
    assert "written by 2 process(es)" in capfd.readouterr().err
