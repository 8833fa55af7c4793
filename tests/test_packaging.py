"""Packaging: one set of pins everywhere, MLproject generated from the configs, no `platform` package."""
import re
from pathlib import Path

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


def test_pins_agree_across_pyproject_requirements_conda_and_python_env():
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    from_pyproject = _pins(pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"])
    from_in = _pins((REPO / "requirements.in").read_text().splitlines())
    python_env = _pins(yaml.safe_load((REPO / "python_env.yaml").read_text())["dependencies"])
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    conda_pip = _pins(next(d for d in conda["dependencies"] if isinstance(d, dict))["pip"])
    assert from_pyproject == from_in
    runtime = {k: v for k, v in from_in.items() if k != "pytest"}
    assert python_env == runtime
    assert conda_pip == runtime
    assert from_in["torch"] == "2.14.1" and from_in["mlflow[auth]"] == "3.17.2" and from_in["optuna"] == "5.0.0"


def test_lock_file_pins_every_top_level_requirement_at_the_same_version():
    lock = _pins((REPO / "requirements.lock").read_text().splitlines())
    wanted = _pins((REPO / "requirements.in").read_text().splitlines())
    for name, version in wanted.items():
        base = name.split("[")[0]
        assert lock.get(base) == version, f"{base}: lock has {lock.get(base)}, requirements.in wants {version}"


def test_mlproject_is_generated_from_the_configs():
    assert (REPO / "MLproject").read_text() == render(), "run: python -m robust_transfer.mlproject > MLproject"
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    assert {"train", "evaluate"} <= set(entry_points)
    assert "lambda_d" not in entry_points["train"]["parameters"]  # snake_case names, per entry point


def test_platform_is_never_an_importable_package():
    assert not (REPO / "platform" / "__init__.py").exists()
    import platform

    assert hasattr(platform, "python_version")  # still the standard library


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in ci and "make test" in readme
