"""Suites as a DAG on Ray (`rtl suite --workers N`, issue 26): which steps can run together, per-step resources,
the sqlite refusal, and real runs: a local Ray whose two independent steps overlap and give the numbers of
`--workers 1`, and a Ray head started here (`ray start --head`) where a failed step fails only its dependants.

Real components: a local Ray (`ray.init(num_cpus=2)`), `ray start --head` from the environment's bin, `mlflow
server` (tests/conftest.py) as the store several step processes write at once.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from robust_transfer.cli import main
from robust_transfer.suites import load_suite
from robust_transfer.suites.dag import dependencies, waves
from support.net import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

STEP = ('    params: {{dataset: "imagefolder:{folder}", epochs: 1, batch_size: 8, n_examples: 6, mode: natural, '
        'eval_steps: 2, device: cpu, seed: {seed}}}\n')
PAIR = """\
name: pair
title: "two independent steps"
scales:
  tiny: {{description: "tiny imagefolder"}}
steps:
  - name: left
    entry: train
""" + STEP.replace("{seed}", "0") + """\
  - name: right
    entry: train
""" + STEP.replace("{seed}", "1")
BROKEN = PAIR.replace("name: pair", "name: broken") + """\
  - name: broken
    entry: train
    params: {{dataset: "imagefolder:/nowhere", epochs: 1, batch_size: 8, n_examples: 6, device: cpu}}
  - name: after-broken
    entry: evaluate
    params: {{model: "{{model:broken}}", attacks: clean, n_examples: 6, device: cpu}}
"""


def _write(workdir: Path, name: str, text: str, folder) -> Path:
    for f in ("MLproject", "conda.yaml"):
        shutil.copy(REPO / f, workdir / f)
    if not (workdir / "bin").exists():
        shutil.copytree(REPO / "bin", workdir / "bin")   # bin/mlflow-entry: what every entry point runs
    (workdir / "projects").mkdir(exist_ok=True)
    path = workdir / "projects" / f"{name}.yaml"
    path.write_text(text.format(folder=folder))
    return path


def _labels(plan_waves):
    """Waves by step name (the seeds of a seeded step are one name)."""
    return [sorted({label.split(" (seed")[0] for label in wave}) for wave in plan_waves]


# ------------------------------------------------------------------------------------------- the plan (fast)
def test_which_steps_run_together_in_hand_written_plans(workdir, tiny_folder):
    pair = load_suite(_write(workdir, "pair", PAIR, tiny_folder), "tiny")
    assert waves(pair.steps) == [["left", "right"]]
    chain = workdir / "projects" / "chain.yaml"
    chain.write_text(PAIR.format(folder=tiny_folder) + """\
  - name: head
    entry: transfer
    params: {source_model: "{model:left}", epochs: 1, batch_size: 8, n_examples: 6, device: cpu}
  - name: check
    entry: evaluate
    params: {model: "{model:head}", attacks: clean, n_examples: 6, device: cpu}
  - name: other
    entry: evaluate
    params: {model: "{model:right}", attacks: clean, n_examples: 6, device: cpu}
  - name: best
    select: {among: [left, right], by: "val_clean_acc"}
""")
    steps = load_suite(chain, "tiny").steps
    assert waves(steps) == [["left", "right"], ["head", "other", "best"], ["check"]]
    names = [s.name for s in steps]
    assert [sorted(names[j] for j in d) for d in dependencies(steps)] == [[], [], ["left"], ["head"], ["right"],
                                                                          ["left", "right"]]


# The shipped suites at scale cpu, by hand from their YAML: sources first, then what reads them, then the
# evaluations (AutoAttack) and select steps of what those made.
SHIPPED = {
    "table4": [["src-large-natural", "src-large-robust"],
               ["table4-front", "table4-lwf-0p001", "table4-lwf-0p01", "table4-lwf-0p1", "table4-lwf-1p0",
                "table4-paper-schedule-lwf-0p01", "table4-paper-schedule-lwf-0p1", "table4-paper-schedule-lwf-1p0",
                "tr-large-natural-c10", "tr-large-robust-c10"],
               ["aa-tr-large-natural-c10", "aa-tr-large-robust-c10", "table4-best-lwf", "table4-paper-schedule-best-lwf"],
               ["aa-table4-best-lwf"]],
    "fig1": [["src-c10-robust", "src-large-robust"], ["fig1-retrain-c10", "fig1-retrain-large"]],
    "table1": [["src-c10-natural", "src-c10-robust", "src-large-natural", "src-large-robust", "src-split-natural",
                "src-split-robust"],
               ["aa-src-c10-natural", "aa-src-c10-robust", "aa-src-large-natural", "aa-src-large-robust"]],
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_suites_run_together_as_written_by_hand(name):
    suite = load_suite(REPO / "projects" / f"{name}.yaml", "cpu")
    assert _labels(waves(suite.steps)) == SHIPPED[name]


def test_every_shipped_step_runs_after_everything_it_reads():
    checked = 0
    for path in sorted((REPO / "projects").glob("*.yaml")):
        steps = load_suite(path, "cpu").steps
        wave_of = {label: k for k, wave in enumerate(waves(steps)) for label in wave}
        for s, deps in zip(steps, dependencies(steps)):
            assert {steps[j].name for j in deps} == set(s.upstream), s.name
            assert all(wave_of[steps[j].label] < wave_of[s.label] for j in deps), s.name
            checked += bool(deps)
    assert checked > 50    # the shipped suites are mostly chains: this checked real edges


def test_resources_per_step_and_per_scale(workdir, tiny_folder, capsys):
    text = PAIR.replace("  - name: right\n", "  - name: right\n    resources: {{tiny: {{cpu: 2, gpu: 0.5}}}}\n")
    text = text.replace("  - name: left\n", "  - name: left\n    resources: {{cpu: 3}}\n")
    steps = {s.name: s for s in load_suite(_write(workdir, "res", text, tiny_folder), "tiny").steps}
    assert steps["left"].resources == {"cpu": 3.0, "gpu": 0.0}
    assert steps["right"].resources == {"cpu": 2.0, "gpu": 0.5}
    before = steps["left"].key
    plain = {s.name: s for s in load_suite(_write(workdir, "plain", PAIR, tiny_folder), "tiny").steps}
    assert plain["left"].key == before and plain["left"].resources == {"cpu": 1.0, "gpu": 0.0}  # not in the key
    bad = _write(workdir, "bad", PAIR.replace("  - name: left\n", "  - name: left\n    resources: {{gpu: 1.5}}\n"),
                 tiny_folder)
    assert main(["suite", "--project", str(bad), "--scale", "tiny", "--dry-run", "true"]) == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resources.gpu=1.5" in err[0] and "bad.yaml:" in err[0], err


def test_a_sqlite_store_with_several_workers_is_refused_in_one_line(workdir, tiny_folder, capsys):
    path = _write(workdir, "pair", PAIR, tiny_folder)
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MLFLOW_TRACKING_URI='sqlite:///" in err[0] and "mlflow server" in err[0], err
    assert not (workdir / "mlflow.db").exists()    # refused before anything was written
    for argv, fragment in [(["--workers", "0"], "workers=0"), (["--ray-address", "auto"], "needs workers >= 2"),
                           (["--workers", "2", "--ray-address", "nowhere"], "ray_address='nowhere'")]:
        assert main(["suite", "--project", str(path), *argv]) == 2
        assert fragment in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- real runs (slow)
@pytest.fixture
def served_project(workdir, tiny_folder, mlflow_server, monkeypatch):
    """The workdir with its suites, tracked by the `mlflow server`; one torch thread per step process."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    mlflow.set_tracking_uri(mlflow_server)
    _write(workdir, "pair", PAIR, tiny_folder)
    _write(workdir, "broken", BROKEN, tiny_folder)
    return workdir


def _children(client, suite_name: str) -> tuple:
    """The newest suite run of `suite_name` and its child step runs by step name."""
    exps = [e.experiment_id for e in client.search_experiments()]
    suite = client.search_runs(exps, f"tags.`rtl.strategy` = 'suite' and tags.`rtl.project` = '{suite_name}'",
                               order_by=["attributes.start_time DESC"], max_results=1)[0]
    kids = client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{suite.info.run_id}'", max_results=100)
    return suite, {r.data.tags["rtl.step"]: r for r in kids}


@pytest.mark.slow
def test_two_independent_steps_overlap_on_a_local_ray_and_match_one_worker(served_project, capsys):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    base = ["suite", "--project", "projects/pair.yaml", "--scale", "tiny", "--report", "false", "--reuse", "never"]
    assert main([*base, "--workers", "2"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "started" in out and out.count("ran in") == 2, out          # progress as steps start and end
    assert "RAY_AUTH_MODE" not in os.environ
    suite2, two = _children(client, "pair")
    assert set(two) == {"left", "right"} and all(r.info.status == "FINISHED" for r in two.values())
    assert suite2.info.status == "FINISHED" and suite2.data.params["workers"] == "2"
    a, b = two["left"].info, two["right"].info
    assert a.start_time < b.end_time and b.start_time < a.end_time, (a, b)   # they ran at the same time
    for r in two.values():   # the reuse key and alias, as with --workers 1
        assert r.data.tags["rtl.step_key"] and r.data.tags["rtl.model_uri"].startswith(f"models:/tiny-{r.data.tags['rtl.step']}@s-")

    assert main([*base, "--workers", "1"]) == 0
    _, one = _children(client, "pair")
    compared = 0
    for name in ("left", "right"):
        accs = {k: v for k, v in one[name].data.metrics.items() if k.endswith("_acc")}
        assert accs and accs == pytest.approx({k: two[name].data.metrics[k] for k in accs}, abs=1e-9), name
        compared += len(accs)
    assert compared >= 4

    # a rerun with workers reuses every finished step (an interrupted suite resumes the same way)
    capsys.readouterr()
    assert main(["suite", "--project", "projects/pair.yaml", "--scale", "tiny", "--report", "false",
                 "--workers", "2"]) == 0
    assert capsys.readouterr().out.count("reused run") == 2


@pytest.fixture
def ray_head(tmp_path_factory, monkeypatch):
    """`ray start --head --block` from the environment's bin on a free port, with token authentication (its own
    token: Ray 2.60 turns tokens on for a head whenever ~/.ray/auth_token exists, and a local `ray.init` writes
    that file), stopped after (its own processes only). The test's process gets the same token."""
    root = tmp_path_factory.mktemp("ray-head")
    port = free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex}
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    log = open(root / "head.log", "w")
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--temp-dir", str(root / "t"), "--block"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in (root / "head.log").read_text():
            if head.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start --head did not start: {(root / 'head.log').read_text()[-1500:]}")
            time.sleep(0.5)
        for k, v in auth.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()           # --block stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


@pytest.mark.slow
def test_on_an_existing_cluster_a_failed_step_fails_only_its_dependants(served_project, ray_head):
    """A separate `rtl suite` process, as a user runs it (Ray caches a process's token after its first cluster)."""
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO / "platform")}
    res = subprocess.run([str(BIN / "rtl"), "suite", "--project", "projects/broken.yaml", "--scale", "tiny",
                          "--report", "false", "--reuse", "never", "--workers", "2", "--ray-address", ray_head],
                         cwd=served_project, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 7, res.stdout[-3000:] + res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "1 step(s) failed: broken" in last and "not run because of them: after-broken" in last, last
    assert f"({ray_head})" in res.stdout and "after-broken: not run: it needs broken" in res.stdout, res.stdout
    suite, kids = _children(client, "broken")
    assert {k: r.info.status for k, r in kids.items()} == {"left": "FINISHED", "right": "FINISHED",
                                                          "broken": "FAILED"}
    assert suite.info.status == "FAILED"


@pytest.mark.slow
def test_a_killed_suite_on_ray_leaves_no_step_running_and_resumes(served_project):
    """SIGKILL `rtl suite --workers 2` (its process group) while its steps run: the local Ray and the steps go with
    it (nothing keeps writing), and the rerun closes the orphans KILLED and runs them again (`--reuse never`: the module's server holds finished runs of the same keys)."""
    from robust_transfer.processes import pid_alive

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO / "platform")}
    args = [str(BIN / "rtl"), "suite", "--project", "projects/pair.yaml", "--scale", "tiny", "--report", "false",
            "--reuse", "never", "--workers", "2"]
    victim = subprocess.Popen(args, cwd=served_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    deadline, running = time.time() + 300, []
    exps = lambda: [e.experiment_id for e in client.search_experiments()]  # noqa: E731
    while time.time() < deadline and victim.poll() is None and len(running) < 2:
        running = client.search_runs(exps(), f"tags.`rtl.suite_pid` = '{victim.pid}' and "
                                     "attributes.status = 'RUNNING' and tags.`rtl.pid` != ''")
        time.sleep(0.3)
    assert victim.poll() is None and len(running) == 2, victim.stdout.read() if victim.poll() is not None else running
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    pids = [int(r.data.tags["rtl.pid"]) for r in running]
    deadline = time.time() + 60
    while time.time() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.5)
    assert not any(pid_alive(pid) for pid in pids), pids      # the steps died with the suite

    rerun = subprocess.run(args, cwd=served_project, env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    closed = {r.info.run_id: r.info.status for r in client.search_runs(exps(), "tags.`rtl.step` != ''", max_results=500)}
    assert all(closed[r.info.run_id] == "KILLED" for r in running)
    _, kids = _children(client, "pair")
    assert {k: r.info.status for k, r in kids.items()} == {"left": "FINISHED", "right": "FINISHED"}
