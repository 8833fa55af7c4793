"""What a study leaves on its parent MLflow run: the trials table, the Pareto-front plot, parameter importances."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .space import SearchSpace
from .study import best_trials, feasible


def trials_frame(study, space: SearchSpace):
    """One row per trial: number, state, objective values, parameters, final metrics, MLflow run id."""
    import pandas as pd

    names = [o.name for o in space.objectives]
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name}
        values = t.values or [None] * len(names)
        row.update({n: v for n, v in zip(names, values)})
        row.update({f"param.{k}": v for k, v in t.params.items()})
        row.update({k: v for k, v in (t.user_attrs.get("metrics") or {}).items()})
        row["feasible"] = feasible(t) if t.state.name == "COMPLETE" else None
        row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
        row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id")
        row["error"] = t.user_attrs.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def _axis_label(name: str) -> str:
    m = re.fullmatch(r"(val_)?(clean|pgd(\d+))_acc", name)
    if not m:
        return name
    what = "clean accuracy" if m.group(2) == "clean" else f"PGD-{m.group(3)} accuracy"
    return f"{what} ({'validation' if m.group(1) else 'test'}: {name})"


def _test_note(row, test_names: list[str]) -> str:
    """The trial's test numbers, marked as such: reported beside the point, never plotted or chosen on."""
    vals = [f"{n} {row[n]:.3f}" for n in test_names if n in row and row[n] == row[n]]   # (x == x: not NaN)
    return f"  test: {', '.join(vals)}" if vals else ""


def pareto_plot(df, path: Path, title: str, space: SearchSpace, front_numbers: list[int]) -> dict | None:
    """The study's own choice on the axes it optimised: with two or more objectives, the first two objective
    values of every complete trial and the study's Pareto front (`best_trials`: feasible, each objective's
    direction); with one, the objective per trial and the best trial. The front's test numbers (clean and
    PGD accuracy on the test split) are written beside its points, marked `test:`. Returns what was drawn (axes,
    the front's trial numbers, the notes beside them); None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.name for o in space.objectives]
    if df.empty or any(n not in df for n in names):
        return None
    done = df[(df["state"] == "COMPLETE") & df[names].notna().all(axis=1)]
    if done.empty:
        return None
    if len(names) >= 2:
        x, y = names[0], names[1]
        xs, ys = done[x], done[y]
    else:
        x, y = "number", names[0]
        xs, ys = done["number"], done[y]
    on_front = done["number"].isin(front_numbers)
    infeasible = done["feasible"] == False   # noqa: E712
    rest = ~on_front & ~infeasible
    test_names = [n for n in ("clean_acc", robust_metric(df)) if n not in names]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.scatter(xs[rest], ys[rest], c="#9aa5b1", s=28, label="trials")
    if infeasible.any():
        ax.scatter(xs[infeasible], ys[infeasible], marker="x", c="#c0392b", s=28, label="violates constraints")
    f = done[on_front].sort_values(x)
    label = "Pareto front (the study's)" if len(names) >= 2 else "best trial"
    ax.plot(f[x], f[y], "-o" if len(names) >= 2 else "o", c="#1f6feb", ms=7, label=label)
    notes = [f"#{int(r['number'])}{_test_note(r, test_names)}" for _, r in f.iterrows()]
    mid = (float(xs.min()) + float(xs.max())) / 2
    for note, (_, r) in zip(notes, f.iterrows()):   # notes point inward, so they stay inside the axes
        right = float(r[x]) > mid
        ax.annotate(note, (r[x], r[y]), textcoords="offset points", xytext=(-4 if right else 4, -10),
                    ha="right" if right else "left", fontsize=7)
    ax.margins(0.08)
    ax.set_xlabel("trial" if x == "number" else _axis_label(x))
    ax.set_ylabel(_axis_label(y))
    directions = ", ".join(f"{o.direction} {o.name}" for o in space.objectives)
    ax.set_title(f"{title}\n{directions}" + ("" if len(names) <= 2 else f" (first two of {len(names)} shown)"),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)   # figures people read: >= 150 dpi (analysis.plots.FIGURE_DPI)
    plt.close(fig)
    return {"x": x, "y": y, "front": [int(n) for n in f["number"]], "notes": notes}


def param_importances(study, space: SearchSpace) -> dict[str, dict[str, float]]:
    """Per objective, {param: importance}; empty when fewer than 2 complete trials or not computable."""
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    out = {}
    for i, o in enumerate(space.objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = (lambda t, i=i: t.values[i]) if space.multi_objective else None
                imp = optuna.importance.get_param_importances(study, target=target)
        except Exception:  # e.g. every trial has the same parameters
            continue
        clean = {k: float(v) for k, v in imp.items() if v is not None and math.isfinite(v)}
        if clean:
            out[o.name] = clean
    return out


def robust_metric(df) -> str:
    """pgd20_acc, else the PGD-k accuracy the trials report (e.g. pgd10_acc at a smaller budget)."""
    if "pgd20_acc" in df:
        return "pgd20_acc"
    cands = sorted(c for c in df.columns if re.fullmatch(r"pgd\d+_acc", str(c)))
    return cands[0] if cands else "pgd20_acc"


def write_study_artifacts(study, space: SearchSpace, out_dir: Path, title: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    df = trials_frame(study, space)
    df.to_csv(out_dir / "trials.csv", index=False)
    written["trials"] = out_dir / "trials.csv"
    best = best_trials(study, space)
    if pareto_plot(df, out_dir / "pareto_front.png", title, space, [t.number for t in best]):
        written["pareto"] = out_dir / "pareto_front.png"
    imp = param_importances(study, space)
    if imp:
        (out_dir / "param_importances.json").write_text(json.dumps(imp, indent=2))
        written["importances"] = out_dir / "param_importances.json"
    (out_dir / "best_trials.json").write_text(json.dumps(
        [{"number": t.number, "values": t.values, "params": t.params,
          "mlflow_run_id": t.user_attrs.get("mlflow_run_id"), "model_uri": t.user_attrs.get("model_uri"),
          "metrics": t.user_attrs.get("metrics")} for t in best], indent=2, default=str))
    written["best"] = out_dir / "best_trials.json"
    return written
