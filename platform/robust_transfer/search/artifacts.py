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


def pareto_points(df, x: str = "clean_acc", y: str = "pgd20_acc"):
    """Indices of the rows on the (max x, max y) front among complete, feasible trials."""
    if df.empty or x not in df or y not in df:
        return [], []
    ok = df[(df["state"] == "COMPLETE") & df[x].notna() & df[y].notna() & (df["feasible"] != False)]  # noqa: E712
    pts = list(zip(ok.index, ok[x], ok[y]))
    front = [i for i, a, b in pts if not any((a2 >= a and b2 >= b) and (a2 > a or b2 > b) for _, a2, b2 in pts)]
    return list(ok.index), front


def pareto_plot(df, path: Path, title: str, x: str = "clean_acc", y: str = "pgd20_acc") -> bool:
    """Clean vs PGD-20 accuracy of every complete trial, the front highlighted. False when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx, front = pareto_points(df, x, y)
    if not idx:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rest = [i for i in idx if i not in front]
    ax.scatter(df.loc[rest, x], df.loc[rest, y], c="#9aa5b1", s=28, label="trials")
    infeasible = df[(df["state"] == "COMPLETE") & (df["feasible"] == False)] if "feasible" in df else df.iloc[0:0]  # noqa: E712
    if len(infeasible) and x in infeasible and y in infeasible:
        ax.scatter(infeasible[x], infeasible[y], marker="x", c="#c0392b", s=28, label="violates constraints")
    f = df.loc[front].sort_values(x)
    ax.plot(f[x], f[y], "-o", c="#1f6feb", ms=7, label="Pareto front")
    for i, r in f.iterrows():
        ax.annotate(f"#{int(r['number'])}", (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel(f"PGD-{y[3:-4]} accuracy" if re.fullmatch(r"pgd\d+_acc", y) else y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)   # figures people read: >= 150 dpi (analysis.plots.FIGURE_DPI)
    plt.close(fig)
    return True


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
    if pareto_plot(df, out_dir / "pareto_front.png", title, y=robust_metric(df)):
        written["pareto"] = out_dir / "pareto_front.png"
    imp = param_importances(study, space)
    if imp:
        (out_dir / "param_importances.json").write_text(json.dumps(imp, indent=2))
        written["importances"] = out_dir / "param_importances.json"
    best = best_trials(study, space)
    (out_dir / "best_trials.json").write_text(json.dumps(
        [{"number": t.number, "values": t.values, "params": t.params,
          "mlflow_run_id": t.user_attrs.get("mlflow_run_id"), "model_uri": t.user_attrs.get("model_uri"),
          "metrics": t.user_attrs.get("metrics")} for t in best], indent=2, default=str))
    written["best"] = out_dir / "best_trials.json"
    return written
