"""A report's tables (analysis/report.py): tidy rows from the runs, and their Markdown.

Column headers come from the metric and its split (`test clean`, `val clean`, `PGD-20`, `AA`, ...), never from a
label that could name the wrong split; a suite's own label for a column is the paper's header, shown beside ours
(`test clean (paper: val.)`). A per-attack number from a cascade evaluation (its run tagged
`rtl.eval_per_attack=cascade`: each attack ran only on the examples the ones before it left correct) carries the
mark CASCADE_MARK and a note under the table.
"""
from __future__ import annotations

import re

import pandas as pd

from ..expr import CASCADE_MARK, CASCADE_NOTE, is_per_attack_metric
from .report_runs import DERIVED_METRICS, RunSelector, _missing, is_accuracy, metric_stats, metric_value, run_ids
from .report_spec import NO_VALUE, NOT_RUN, _at_scale, _subst, scale_description

# --- tables --------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["label", "metric", "ours", "paper", "step", "run_id"]
SEED_COLUMNS = ["std", "n"]   # added (to the CSV too) when a row comes from a seeded step: ours = the mean
CASCADE_COLUMNS = ["cascade"]  # added when a number is a cascade's per-attack number
_SPLIT_WORDS = {"val_": "val ", "train_": "train "}
_ATTACK = re.compile(r"^(pgd|cw)(\d+)$")
_ATTACK_NAMES = {"aa": "AA", "worst": "worst case", "fgsm": "FGSM", "apgd-ce": "APGD-CE"}


def metric_header(metric: str) -> str | None:
    """The column header a metric's name and split give: `clean_acc` → `test clean`, `val_clean_acc` → `val clean`,
    `pgd20_acc` → `PGD-20`, `val_pgd10_acc` → `val PGD-10`, `aa_acc` → `AA`, `mean` → `mean of test clean and
    PGD-20`; an ℓ2 evaluation's `pgd20_acc_l2` → `PGD-20 (ℓ2)`; None for a metric that is not an accuracy (its
    suite's label names it)."""
    if metric.endswith("_l2"):
        base = metric_header(metric[:-len("_l2")])
        return None if base is None else f"{base} (ℓ2)"
    if metric in DERIVED_METRICS:
        return "mean of test clean and PGD-20"
    split = next((p for p in _SPLIT_WORDS if metric.startswith(p)), "")
    body = metric[len(split):]
    if not body.endswith("_acc"):
        return None
    name = body[:-len("_acc")]
    m = _ATTACK.match(name)
    word = "clean" if name == "clean" else f"{m.group(1).upper()}-{m.group(2)}" if m else _ATTACK_NAMES.get(name)
    if word is None:
        return None
    return (_SPLIT_WORDS.get(split) or ("test " if name == "clean" else "")) + word


def column_header(metric: str, label: str | None) -> str:
    """Ours from the metric; the suite's label, where it differs, as the paper's header beside it."""
    ours = metric_header(metric)
    if ours is None:
        return label or metric
    if not label or label.strip().lower() == ours.lower():
        return ours
    return f"{ours} (paper: {label})"


def is_cascade(run: dict | None, metric: str) -> bool:
    """Whether this number of `run` is a cascade's per-attack number (any of a seeded step's runs)."""
    runs = (run.get("seed_runs") or [run]) if run else []
    return is_per_attack_metric(metric) and any(r["tags"].get("rtl.eval_per_attack") == "cascade" for r in runs)


def table_frame(entry: dict, sel: RunSelector, variables: dict | None = None,
                warn=lambda msg: None) -> pd.DataFrame:
    """Tidy rows (TABLE_COLUMNS + status + SEED_COLUMNS) of one table: ours/paper are fractions, None when
    absent; for a seeded step ours is the mean over its seeds, std their standard deviation, n their number
    (std None and n 1 for an unseeded step)."""
    variables = variables or {}
    out = []
    for row in entry["rows"]:
        if not _at_scale(row, sel.scale):
            continue
        label = _subst(row["label"], variables)
        for metric in entry["columns"]:
            step = row["metrics_from"].get(metric, row["step"])
            run = sel.run(step)
            value = metric_value(run, metric)
            if run is None:
                status = NOT_RUN
            elif value is None:
                status = NO_VALUE
                warn(f"{entry['name']}: run {run['run_id']} of step {step!r} has no metric {metric!r}")
            else:
                status = "ok"
            stats = metric_stats(run, metric) if value is not None else None
            seeded = bool(run and run.get("seed_runs"))
            out.append({"label": label, "metric": metric, "ours": value, "paper": row["paper"].get(metric),
                        "step": step, "run_id": run_ids(run), "status": status,
                        "paper_label": _subst(row["paper_label"], variables),
                        "std": stats["std"] if stats else None,
                        "n": stats["n"] if stats else None, "seeded": seeded,
                        "cascade": bool(value is not None and is_cascade(run, metric))})
    for step in dict.fromkeys(r["step"] for r in out if r["status"] == NOT_RUN):
        warn(f"{entry['name']}: step {step!r} has no FINISHED run at scale {sel.scale!r} (shown as '{NOT_RUN}')")
    frame = pd.DataFrame(out, columns=TABLE_COLUMNS + ["status", "paper_label", *SEED_COLUMNS, "seeded", "cascade"])
    frame["n"] = frame["n"].astype("Int64")
    return frame


def csv_columns(frame: pd.DataFrame) -> list[str]:
    """TABLE_COLUMNS, std and n when a row of the table comes from a seeded step, cascade when a number is a
    cascade's per-attack number."""
    return (TABLE_COLUMNS + (SEED_COLUMNS if "seeded" in frame and frame["seeded"].any() else [])
            + (CASCADE_COLUMNS if "cascade" in frame and frame["cascade"].any() else []))


def format_cell(r, metric: str) -> str:
    """A table cell: the value; for a seeded step `mean ± std (n=3)` (`mean (n=1)` when one seed finished)."""
    if r.status != "ok":
        return r.status
    text = format_value(r.ours, metric) + (CASCADE_MARK if getattr(r, "cascade", False) else "")
    if not getattr(r, "seeded", False):
        return text
    if not _missing(r.std) and r.n and r.n > 1:
        text += f" ± {format_value(r.std, metric)}"
    return text + f" (n={int(r.n)})"


def format_value(v, metric: str = "clean_acc") -> str:
    if _missing(v):
        return ""
    return f"{100 * float(v):.2f}" if is_accuracy(metric) else f"{float(v):.4g}"


def _md(text) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def _runs_line(frame: pd.DataFrame) -> str:
    used = frame[frame["run_id"].notna()][["step", "run_id"]].drop_duplicates()
    missing = list(dict.fromkeys(frame.loc[frame["run_id"].isna(), "step"]))
    parts = [f"`{s}` {r}" for s, r in zip(used["step"], used["run_id"])]
    line = "Runs: " + ("; ".join(parts) if parts else "none")
    return line + (f". Not run: {', '.join(f'`{s}`' for s in missing)}." if missing else ".")


def suite_line(spec: dict, scale: str, *, with_title: bool = True) -> str:
    """'Suite **<title>** (paper: Table 2) at scale `cpu`: <the scale's description>.'"""
    paper = f"paper: {spec['paper']}" if spec.get("paper") else ""
    desc = _md(scale_description(spec, scale)).rstrip(". ")
    if not with_title:
        return (f"{_md(paper[:1].upper() + paper[1:])}. " if paper else "") + f"Scale `{scale}`: {desc}."
    return f"Suite **{_md(spec['title'])}**{_md(f' ({paper})' if paper else '')} at scale `{scale}`: {desc}."


def render_table(entry: dict, frame: pd.DataFrame, spec: dict, scale: str, heading: str = "###", *,
                 with_suite: bool = True) -> str:
    """The Markdown of one table: a heading, the suite/scale/description line (unless `with_suite` is
    false: index.md states it once per suite), the run ids, the table."""
    metrics = list(entry["columns"])
    with_paper = bool(frame["paper"].notna().any())
    with_paper_row = bool(frame["paper_label"].notna().any())
    header = ["setting"]
    for m in metrics:
        label = entry["columns"][m]
        ours = metric_header(m) or label or m
        # beside the paper's numbers, the paper's own header (e.g. its "val." for CIFAR's test set)
        header += [f"{ours} (ours)", f"{label or ours} (paper)"] if with_paper else [column_header(m, label)]
    header += ["paper row"] if with_paper_row else []
    lines = [f"{heading} {_md(entry['title'])}", "", *([suite_line(spec, scale)] if with_suite else []),
             _runs_line(frame), "",
             "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1 - with_paper_row) + [":---"] * with_paper_row) + "|"]
    for label, rows in frame.groupby("label", sort=False):
        by_metric = {r.metric: r for r in rows.itertuples()}
        cells = [_md(label)]
        for m in metrics:
            r = by_metric[m]
            cells.append(format_cell(r, m))
            if with_paper:
                cells.append(format_value(r.paper, m))
        if with_paper_row:
            cells.append(_md(rows["paper_label"].dropna().iloc[0]) if rows["paper_label"].notna().any() else "")
        lines.append("| " + " | ".join(cells) + " |")
    if "cascade" in frame and frame["cascade"].any():
        lines += ["", CASCADE_NOTE]
    return "\n".join(lines) + "\n"

