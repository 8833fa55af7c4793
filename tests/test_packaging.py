"""Packaging: ranges in pyproject inside the lock's pins, the runtime set (requirements-runtime.txt) = the core
install at the lock's pins, conda.yaml and logged models = runtime packages, MLproject generated from the configs,
no `platform` package."""
import re
from pathlib import Path

import pytest
import yaml

from robust_transfer.mlproject import render

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)$")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = PIN.match(str(line).strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def _requirements(specs) -> dict:
    from packaging.requirements import Requirement

    return {Requirement(s).name.lower(): Requirement(s) for s in specs}


def test_the_lock_satisfies_every_range_of_pyproject_and_requirements_in_names_them_all():
    """pyproject states ranges (core + extras); requirements.in pins the development set (core + every
    extra); the lock pins everything, inside every range."""
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    assert {"ray", "postgres", "redis", "auth", "dev"} <= set(extras)
    ranges = _requirements(pyproject["dependencies"] + [r for group in extras.values() for r in group])
    assert not any(r.specifier and all(sp.operator == "==" for sp in r.specifier) for r in ranges.values()), \
        "pyproject states ranges; exact pins belong in requirements.lock"
    core = {n.lower() for n in _requirements(pyproject["dependencies"])}
    assert not core & {"ray", "psycopg2-binary", "redis", "pytest"}, "the core install needs no extra"
    lock = _pins((REPO / "requirements.lock").read_text().splitlines())
    for name, req in ranges.items():
        assert name in lock, f"{name} is not in requirements.lock"
        assert req.specifier.contains(lock[name]), f"{name}: lock has {lock[name]}, pyproject wants {req.specifier}"
    from_in = {k.split("[")[0] for k in _pins((REPO / "requirements.in").read_text().splitlines())}
    assert from_in == set(ranges), "requirements.in pins exactly pyproject's dependencies and extras"
    assert pyproject["license"] == "MIT" and "<" not in pyproject["requires-python"]


def test_conda_env_is_the_runtime_set_exactly_and_mlproject_uses_it():
    """One environment file for `--env-manager conda|virtualenv|uv`: python pinned (x.y.z) + the runtime lines."""
    from robust_transfer.mlproject import render_conda

    runtime_text = (REPO / "requirements-runtime.txt").read_text()
    assert (REPO / "conda.yaml").read_text() == render_conda(runtime_text), \
        "run: python -m robust_transfer.mlproject conda < requirements-runtime.txt > conda.yaml"
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip = next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"]
    assert _pins(pip) == _pins(runtime_text.splitlines()) and len(pip) == len(_pins(pip))
    assert not any(str(d).startswith("-e") or str(d) in (".", "./") for d in pip), "no install of a checkout"
    assert re.fullmatch(r"python=\d+\.\d+\.\d+", conda["dependencies"][0])
    mlproject = yaml.safe_load((REPO / "MLproject").read_text())
    assert mlproject["conda_env"] == "conda.yaml" and "python_env" not in mlproject
    assert not (REPO / "python_env.yaml").exists()
    # MLflow derives its virtualenv from it (python version, pip requirements)
    from mlflow.utils.environment import _PythonEnv

    env = _PythonEnv.from_conda_yaml(str(REPO / "conda.yaml"))
    assert env.python == conda["dependencies"][0].split("=")[1] and env.dependencies == pip


# What only the development lock may hold: the test and lint tools, every extra's own package, torch's CUDA.
DEV_ONLY = {"pytest", "iniconfig", "pluggy", "ruff", "mypy", "ray", "redis", "psycopg2-binary", "flask-wtf"}
CUDA = re.compile(r"^(nvidia-|cuda-|triton$)")


def test_the_runtime_set_is_current_and_holds_no_test_tool_extra_or_cuda_pin():
    """requirements-runtime.txt = what `pip install robust-transfer` pulls (pyproject's core dependencies and
    theirs), at the lock's pins; everything the extras, the tests and the linters add stays in the lock."""
    from robust_transfer.runtime_requirements import render_runtime

    lock_text = (REPO / "requirements.lock").read_text()
    runtime_text = (REPO / "requirements-runtime.txt").read_text()
    assert runtime_text == render_runtime((REPO / "pyproject.toml").read_text(), lock_text), \
        "run: python -m robust_transfer.runtime_requirements > requirements-runtime.txt"
    runtime, lock = _pins(runtime_text.splitlines()), _pins(lock_text.splitlines())
    assert runtime and all(lock.get(name) == pin for name, pin in runtime.items()), "runtime pins = the lock's"
    canonical = {n.replace("_", "-") for n in runtime}
    assert not canonical & DEV_ONLY and not any(CUDA.match(n) for n in canonical)
    assert DEV_ONLY <= {n.replace("_", "-") for n in lock}, "the development lock still holds them all"
    assert any(CUDA.match(n) for n in lock), "the development lock is the GPU one"
    import tomllib

    core = _requirements(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert set(core) <= set(runtime), "every core dependency is in the runtime set"


def test_a_logged_model_declares_runtime_requirements_only():
    """The pyfunc's requirements (tracking/models.py) are runtime packages at the runtime set's versions."""
    from robust_transfer.tracking.models import _pip_requirements

    runtime = _pins((REPO / "requirements-runtime.txt").read_text().splitlines())
    declared = _pins(_pip_requirements())
    assert declared and len(declared) == len(_pip_requirements()), "every requirement pinned"
    assert {n: v for n, v in declared.items() if runtime.get(n) != v} == {}
    assert not {n.replace("_", "-") for n in declared} & DEV_ONLY


def test_mlproject_is_generated_from_the_configs():
    assert (REPO / "MLproject").read_text() == render(), "run: python -m robust_transfer.mlproject > MLproject"
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    assert {"train", "evaluate"} <= set(entry_points)
    from robust_transfer.config import canonical_entry_point

    # each entry point runs the rtl subcommand of its name (the entry point import_model runs `rtl import`)
    assert all(ep["command"].startswith(f"bash bin/mlflow-entry {canonical_entry_point(name)} ")
               for name, ep in entry_points.items())
    assert "import_model" in entry_points
    assert "lambda_d" not in entry_points["train"]["parameters"]  # snake_case names, per entry point


def test_platform_is_never_an_importable_package():
    assert not (REPO / "platform" / "__init__.py").exists()
    import platform

    assert hasattr(platform, "python_version")  # still the standard library


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in ci and "make test" in readme


@pytest.mark.installs
def test_pip_resolves_the_runtime_set_to_itself_plus_torchs_cuda_wheels(tmp_path):
    """pip's own resolver (a dry run against the package index) installs for requirements-runtime.txt exactly
    its packages, plus only what the file leaves out on purpose: torch's CUDA wheels and setuptools. About
    2 min here (it reads every package's metadata from the index), so `make test-install`, not CI."""
    import json
    import subprocess
    import sys

    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--report", str(report), "-r", str(REPO / "requirements-runtime.txt")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    resolved = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    runtime = {n.replace("_", "-"): v for n, v in _pins((REPO / "requirements-runtime.txt").read_text().splitlines()).items()}
    assert {n: v for n, v in runtime.items() if resolved.get(n) != v} == {}, "every runtime pin installed as pinned"
    added = set(resolved) - set(runtime)
    assert added and all(CUDA.match(n) or n == "setuptools" for n in added), sorted(added)
