"""`report`: a suite's tables and figures (projects/*.yaml `report:`), built from MLflow runs.

For every step a table or figure names, the newest FINISHED run tagged `rtl.step=<step>` and
`rtl.scale=<scale>` supplies the numbers (children of that run, e.g. one per k, are found by
`mlflow.parentRunId`). Writes `<out>/<scale>/<name>.{md,csv,png}` and this suite's section of
`<out>/<scale>/index.md`; other suites' files in the same folder are never touched.

Public pieces (the suite runner uses them): `load_report_spec`, `check_scale`, `report_steps`,
`select_runs`, `write_report`, `run_report`.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from ..errors import ConfigError
from . import plots
from .claims import claim_entry, evaluate_claim

FIGURE_KINDS = ("lines", "bars", "artifact")
DERIVED_METRICS = {"mean": ("clean_acc", "pgd20_acc")}   # mean = (clean_acc + pgd20_acc) / 2
NOT_RUN = "not run"
NO_VALUE = "n/a"          # the run exists but did not log the metric
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")          # output file names, suite names
_STEP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")         # step names (used inside filter strings)
_METRIC = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --- the suite YAML ------------------------------------------------------------------------------------
def _where(path, entry: str | None = None) -> str:
    return f"project={str(path)!r}" + (f", report entry {entry}" if entry else "")


def _read_yaml(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"project={str(path)!r} does not exist; give a suite YAML, "
                          "e.g. projects/table2.yaml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"project={str(path)!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    try:
        from ..search.space import _check_alias_budget  # (issue 17 §2: alias expansion and depth bounded)

        _check_alias_budget(text, f"project={str(path)!r}", ConfigError)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"project={str(path)!r} is not valid YAML{where}: {problem}") from None


def _str(value, what: str, where: str, *, required: bool = True, pattern: re.Pattern | None = None) -> str | None:
    if value is None or value == "":
        if required:
            raise ConfigError(f"{where}: `{what}` is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: `{what}`={value!r} must be a string")
    value = str(value)
    if pattern is not None and not pattern.match(value):
        raise ConfigError(f"{where}: `{what}`={value!r} is not a valid name; use letters, digits, '.', '_' or '-'")
    return value


def _list(value, what: str, where: str) -> list:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: `{what}` must be a non-empty list")
    return value


def _mapping(value, what: str, where: str, *, required: bool = True) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or (required and not value):
        raise ConfigError(f"{where}: `{what}` must be a non-empty mapping")
    return value


def _metric(value, where: str, what: str = "metric") -> str:
    return _str(value, what, where, pattern=_METRIC)


def _scales_of(value, where: str) -> list[str] | None:
    if value is None:
        return None
    return [_str(s, "scales", where, pattern=_NAME) for s in _list(value, "scales", where)]


def _table_entry(raw: dict, path, i: int) -> dict:
    name = _str(raw.get("table"), "table", _where(path, f"{i}"), pattern=_NAME)
    where = _where(path, repr(name))
    cols = raw.get("columns")
    if isinstance(cols, list):
        cols = {c: c for c in cols}
    cols = _mapping(cols, "columns", where)
    columns = {_metric(m, where): _str(h, f"columns.{m}", where) for m, h in cols.items()}
    rows = []
    for r in _list(raw.get("rows"), "rows", where):
        r = _mapping(r, "rows[]", where)
        label = _str(r.get("label"), "label", where)
        rw = f"{where}, row {label!r}"
        if any(label == other["label"] for other in rows):
            raise ConfigError(f"{rw}: two rows have this label; labels name the rows of the table")
        paper = {}
        for m, v in _mapping(r.get("paper"), "paper", rw, required=False).items():
            if m not in columns:
                raise ConfigError(f"{rw}: paper metric {m!r} is not a column; columns: {', '.join(columns)}")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ConfigError(f"{rw}: paper.{m}={v!r} must be a number (a fraction, e.g. 0.8305)")
            paper[m] = None if v is None else float(v)
        metrics_from = {}
        for m, s in _mapping(r.get("metrics_from"), "metrics_from", rw, required=False).items():
            if m not in columns:
                raise ConfigError(f"{rw}: metrics_from metric {m!r} is not a column; columns: {', '.join(columns)}")
            metrics_from[m] = _str(s, f"metrics_from.{m}", rw, pattern=_STEP)
        rows.append({"label": label, "step": _str(r.get("step"), "step", rw, pattern=_STEP),
                     "paper_label": _str(r.get("paper_label"), "paper_label", rw, required=False),
                     "paper": paper, "metrics_from": metrics_from, "scales": _scales_of(r.get("scales"), rw)})
    return {"type": "table", "name": name, "title": _str(raw.get("title"), "title", where, required=False) or name,
            "columns": columns, "rows": rows}


def _series(raw, where: str, i: int) -> dict:
    raw = _mapping(raw, "series[]", where)
    label = _str(raw.get("label"), "label", where)
    sw = f"{where}, series {label!r}"
    step, steps = raw.get("step"), raw.get("steps")
    if (step is None) == (steps is None):
        raise ConfigError(f"{sw}: give `step` (with `children: true` for its child runs) or `steps: [...]`")
    children = raw.get("children", False)
    if not isinstance(children, bool):
        raise ConfigError(f"{sw}: `children`={children!r} must be true or false")
    if steps is not None and children:
        raise ConfigError(f"{sw}: `children: true` goes with a single `step`, not `steps`")
    names, x_of = [], {}
    for item in ([step] if step is not None else _list(steps, "steps", sw)):
        if isinstance(item, dict):  # {step: name, x: value}: the x of a run that lacks (or mislabels) the param
            name = _str(item.get("step"), "steps[].step", sw, pattern=_STEP)
            x_of[name] = _str(item.get("x"), "steps[].x", sw)
        else:
            name = _str(item, "step", sw, pattern=_STEP)
        names.append(name)
    return {"label": label, "steps": names, "x": x_of, "children": children,
            "scales": _scales_of(raw.get("scales"), sw)}


def _figure_entry(raw: dict, path, i: int) -> dict:
    name = _str(raw.get("figure"), "figure", _where(path, f"{i}"), pattern=_NAME)
    where = _where(path, repr(name))
    kind = raw.get("kind")
    if kind not in FIGURE_KINDS:
        raise ConfigError(f"{where}: kind={kind!r} is not allowed; choose one of: {', '.join(FIGURE_KINDS)}")
    entry = {"type": "figure", "name": name, "kind": kind,
             "title": _str(raw.get("title"), "title", where, required=False) or name,
             "paper_note": _str(raw.get("paper_note"), "paper_note", where, required=False)}
    if kind == "artifact":
        artifact = _str(raw.get("artifact"), "artifact", where)
        if artifact.startswith("/") or ".." in Path(artifact).parts:
            raise ConfigError(f"{where}: artifact={artifact!r} must be a path inside the run's artifacts")
        return entry | {"step": _str(raw.get("step"), "step", where, pattern=_STEP), "artifact": artifact}
    entry["x"] = _str(raw.get("x"), "x", where, pattern=_METRIC)
    entry["y"] = [_metric(m, where, "y") for m in _list(raw.get("y"), "y", where)]
    entry["series"] = [_series(s, where, j) for j, s in enumerate(_list(raw.get("series"), "series", where))]
    entry["hlines"] = []
    for h in (_list(raw["hlines"], "hlines", where) if raw.get("hlines") is not None else []):
        h = _mapping(h, "hlines[]", where)
        entry["hlines"].append({"label": _str(h.get("label"), "label", where),
                                "step": _str(h.get("step"), "step", where, pattern=_STEP),
                                "metric": _metric(h.get("metric"), where),
                                "scales": _scales_of(h.get("scales"), where)})
    return entry


def load_report_spec(path: str | Path) -> dict:
    """Read a suite YAML and check what `report` needs (name, title, paper, scales, report); other keys
    (the steps) are left to the suite runner. Returns a normalised dict; raises ConfigError (one line,
    naming the file) on anything malformed."""
    path = Path(path)
    data = _read_yaml(path)
    where = _where(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with name, title, scales, steps and report; "
                          f"got {type(data).__name__}")
    name = _str(data.get("name"), "name", where, pattern=_NAME)
    scales = _mapping(data.get("scales"), "scales", where)
    for s, v in scales.items():
        _str(s, "scales", where, pattern=_NAME)
        if v is not None and not isinstance(v, dict):
            raise ConfigError(f"{where}: scales.{s} must be a mapping of variables (and a description)")
    raw_report = data.get("report") or []
    if not isinstance(raw_report, list):
        raise ConfigError(f"{where}: `report` must be a list of table:/figure: entries")
    report, seen = [], set()
    for i, raw in enumerate(raw_report, 1):
        if not isinstance(raw, dict) or sum(k in raw for k in ("table", "figure", "claim")) != 1:
            raise ConfigError(f"{_where(path, str(i))}: each entry needs exactly one of `table:`, `figure:` or `claim:`")
        if "claim" in raw:
            entry = claim_entry(raw, _where(path, str(i)))
        else:
            entry = _table_entry(raw, path, i) if "table" in raw else _figure_entry(raw, path, i)
        if entry["name"] in seen or entry["name"] == "index":
            raise ConfigError(f"{_where(path, repr(entry['name']))}: the name is already used by another entry "
                              f"(or is `index`): each writes {entry['name']}.csv; give every table and figure "
                              "its own name")
        seen.add(entry["name"])
        report.append(entry)
    return {"path": str(path), "name": name, "title": _str(data.get("title"), "title", where, required=False) or name,
            "paper": _str(data.get("paper"), "paper", where, required=False),
            "scales": {str(s): dict(v or {}) for s, v in scales.items()}, "report": report}


def check_scale(spec: dict, scale: str) -> dict:
    """The scale's variables; ConfigError listing the suite's scales if it has no such scale."""
    if scale not in spec["scales"]:
        raise ConfigError(f"scale={scale!r} is not a scale of {spec['path']}; choose one of: "
                          f"{', '.join(spec['scales'])}")
    return spec["scales"][scale]


def scale_description(spec: dict, scale: str) -> str:
    variables = check_scale(spec, scale)
    if variables.get("description"):
        return str(variables["description"]).strip()
    return ", ".join(f"{k}={v}" for k, v in variables.items()) or "(no description)"


def _subst(text, variables: dict):
    """`{var}` → the scale's value where the scale defines var (labels may say "→ {target}")."""
    if not isinstance(text, str):
        return text
    return _VAR.sub(lambda m: str(variables[m.group(1)]) if m.group(1) in variables else m.group(0), text)


def _at_scale(item: dict, scale: str) -> bool:
    return item.get("scales") is None or scale in item["scales"]


def report_steps(spec: dict, scale: str | None = None) -> list[str]:
    """Every step the report reads (at `scale`, or at any), in order of first mention."""
    out: list[str] = []
    ok = (lambda item: True) if scale is None else (lambda item: _at_scale(item, scale))
    for e in spec["report"]:
        if e["type"] == "claim":
            out += e["steps"] if ok(e) else []
        elif e["type"] == "table":
            for r in filter(ok, e["rows"]):
                out += [r["step"], *r["metrics_from"].values()]
        elif e["kind"] == "artifact":
            out.append(e["step"])
        else:
            for s in filter(ok, e["series"]):
                out += s["steps"]
            out += [h["step"] for h in e["hlines"] if ok(h)]
    return list(dict.fromkeys(out))


# --- run selection -------------------------------------------------------------------------------------
def _search(filter_string: str, experiment_ids: list[str] | None, max_results: int) -> pd.DataFrame:
    import mlflow

    where = {"experiment_ids": experiment_ids} if experiment_ids else {"search_all_experiments": True}
    return mlflow.search_runs(filter_string=filter_string, order_by=["attributes.start_time DESC"],
                              max_results=max_results, output_format="pandas", **where)


def _record(row: pd.Series) -> dict:
    def section(prefix):
        n = len(prefix)
        return {k[n:]: v for k, v in row.items() if k.startswith(prefix) and not _missing(v)}

    return {"run_id": row["run_id"], "experiment_id": row.get("experiment_id"), "start_time": row.get("start_time"),
            "metrics": section("metrics."), "params": section("params."), "tags": section("tags.")}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class RunSelector:
    """Newest FINISHED run per step at one scale (cached), and the FINISHED children of a run."""

    def __init__(self, scale: str, experiment_ids: list[str] | None = None):
        self.scale, self.experiment_ids = scale, experiment_ids
        self._runs: dict[str, dict | None] = {}
        self._children: dict[str, list[dict]] = {}

    def run(self, step: str) -> dict | None:
        if step not in self._runs:
            df = _search(f"tags.`rtl.step` = '{step}' and tags.`rtl.scale` = '{self.scale}' "
                         "and attributes.status = 'FINISHED'", self.experiment_ids, 1)
            self._runs[step] = _record(df.iloc[0]) if len(df) else None
        return self._runs[step]

    def children(self, run: dict) -> list[dict]:
        """Newest first; children live in their parent's experiment."""
        if run["run_id"] not in self._children:
            df = _search(f"tags.`mlflow.parentRunId` = '{run['run_id']}' and attributes.status = 'FINISHED'",
                         [run["experiment_id"]] if run.get("experiment_id") else self.experiment_ids, 10_000)
            self._children[run["run_id"]] = [_record(r) for _, r in df.iterrows()]
        return self._children[run["run_id"]]

    def frame(self) -> pd.DataFrame:
        """One row per step looked up so far: run_id (None if not run), start_time, metrics.*."""
        rows = []
        for step, run in self._runs.items():
            row = {"step": step, "run_id": run["run_id"] if run else None,
                   "start_time": run["start_time"] if run else None}
            row.update({f"metrics.{k}": v for k, v in (run["metrics"] if run else {}).items()})
            rows.append(row)
        return pd.DataFrame(rows, columns=None if rows else ["step", "run_id", "start_time"]).set_index("step")


def select_runs(steps, scale: str, experiment_ids: list[str] | None = None) -> pd.DataFrame:
    """The newest FINISHED run of each step at `scale`: a DataFrame indexed by step (run_id None: not run)."""
    sel = RunSelector(scale, experiment_ids)
    for step in steps:
        sel.run(step)
    return sel.frame()


def metric_value(run: dict | None, metric: str) -> float | None:
    """A run's metric; `mean` is (clean_acc + pgd20_acc) / 2 unless the run logged one itself."""
    if run is None:
        return None
    if metric in run["metrics"]:
        return float(run["metrics"][metric])
    if metric in DERIVED_METRICS:
        parts = [run["metrics"].get(m) for m in DERIVED_METRICS[metric]]
        if all(p is not None for p in parts):
            return sum(float(p) for p in parts) / len(parts)
    return None


# --- tables --------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["label", "metric", "ours", "paper", "step", "run_id"]


def table_frame(entry: dict, sel: RunSelector, variables: dict | None = None,
                warn=lambda msg: None) -> pd.DataFrame:
    """Tidy rows (TABLE_COLUMNS + status) of one table: ours/paper are fractions, None when absent."""
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
            out.append({"label": label, "metric": metric, "ours": value, "paper": row["paper"].get(metric),
                        "step": step, "run_id": run["run_id"] if run else None, "status": status,
                        "paper_label": _subst(row["paper_label"], variables)})
    for step in dict.fromkeys(r["step"] for r in out if r["status"] == NOT_RUN):
        warn(f"{entry['name']}: step {step!r} has no FINISHED run at scale {sel.scale!r} (shown as '{NOT_RUN}')")
    return pd.DataFrame(out, columns=TABLE_COLUMNS + ["status", "paper_label"])


def is_accuracy(metric: str) -> bool:
    """Accuracies (fractions) are shown as percentages; other metrics (e.g. feature distances) as numbers."""
    return metric.endswith("_acc") or metric in DERIVED_METRICS


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
        h = entry["columns"][m]
        header += [f"{h} (ours)", f"{h} (paper)"] if with_paper else [h]
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
            cells.append(format_value(r.ours, m) if r.status == "ok" else r.status)
            if with_paper:
                cells.append(format_value(r.paper, m))
        if with_paper_row:
            cells.append(_md(rows["paper_label"].dropna().iloc[0]) if rows["paper_label"].notna().any() else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- figures -------------------------------------------------------------------------------------------
def figure_frames(entry: dict, sel: RunSelector, variables: dict | None = None,
                  warn=lambda msg: None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, hlines) of a lines/bars figure: plots.POINT_COLUMNS and plots.HLINE_COLUMNS."""
    variables = variables or {}
    points, hlines, name, x = [], [], entry["name"], entry["x"]
    for s in entry["series"]:
        if not _at_scale(s, sel.scale):
            continue
        label = _subst(s["label"], variables)
        runs = []
        for step in s["steps"]:
            run = sel.run(step)
            if run is None:
                warn(f"{name}: step {step!r} has no FINISHED run at scale {sel.scale!r}; series {label!r} "
                     "is missing it")
            elif s["children"]:
                kids = sel.children(run)
                runs += [(step, k) for k in kids] if kids else [(step, run)]  # a single k has no children
            else:
                runs.append((step, run))
        seen = set()
        for step, run in runs:
            xv = s["x"].get(step) if run["run_id"] == (sel.run(step) or {}).get("run_id") else None
            xv = xv if xv is not None else run["params"].get(x)
            if xv is None:
                warn(f"{name}: run {run['run_id']} of step {step!r} has no param {x!r}; left out")
                continue
            for metric in entry["y"]:
                y = metric_value(run, metric)
                if y is None:
                    warn(f"{name}: run {run['run_id']} of step {step!r} has no metric {metric!r}; left out")
                elif (metric, xv) in seen:
                    warn(f"{name}: series {label!r} has two runs with {x}={xv}; kept the newest")
                else:
                    seen.add((metric, xv))
                    points.append({"series": label, "metric": metric, "x": xv, "y": y, "step": step,
                                   "run_id": run["run_id"]})
    for h in entry.get("hlines", []):
        if not _at_scale(h, sel.scale):
            continue
        run = sel.run(h["step"])
        y = metric_value(run, h["metric"])
        if y is None:
            why = "has no FINISHED run" if run is None else f"has no metric {h['metric']!r}"
            warn(f"{name}: reference line {h['label']!r}: step {h['step']!r} {why} at scale {sel.scale!r}")
            continue
        hlines.append({"label": _subst(h["label"], variables), "metric": h["metric"], "y": y, "step": h["step"],
                       "run_id": run["run_id"]})
    return pd.DataFrame(points, columns=plots.POINT_COLUMNS), pd.DataFrame(hlines, columns=plots.HLINE_COLUMNS)


def _figure_csv(points: pd.DataFrame, hlines: pd.DataFrame) -> pd.DataFrame:
    a = points.assign(kind="point")
    b = hlines.rename(columns={"label": "series"}).assign(kind="hline", x=None)
    rows = a.to_dict("records") + b.to_dict("records")
    return pd.DataFrame(rows, columns=["kind", "series", "metric", "x", "y", "step", "run_id"])


def _copy_artifact(entry: dict, sel: RunSelector, out_dir: Path, warn) -> tuple[Path | None, pd.DataFrame]:
    import mlflow

    run = sel.run(entry["step"])
    row = {"step": entry["step"], "run_id": run["run_id"] if run else None, "artifact": entry["artifact"], "file": None}
    if run is None:
        warn(f"{entry['name']}: step {entry['step']!r} has no FINISHED run at scale {sel.scale!r}")
        return None, pd.DataFrame([row])
    suffix = Path(entry["artifact"]).suffix or ".png"
    dest = out_dir / f"{entry['name']}{suffix}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(run_id=run["run_id"], artifact_path=entry["artifact"],
                                                             dst_path=tmp))
        except Exception as e:  # MlflowException, OSError: the artifact is not there
            warn(f"{entry['name']}: run {run['run_id']} of step {entry['step']!r} has no artifact "
                 f"{entry['artifact']!r} ({type(e).__name__})")
            return None, pd.DataFrame([row])
        if not local.is_file():
            warn(f"{entry['name']}: artifact {entry['artifact']!r} of run {run['run_id']} is a folder, not a file")
            return None, pd.DataFrame([row])
        _atomic_copy(local, dest)
    row["file"] = dest.name
    return dest, pd.DataFrame([row])


# --- writing -------------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _atomic_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    _atomic_write(path, frame.to_csv(index=False))


def _section_markers(suite: str) -> tuple[str, str]:
    return f"<!-- rtl-report:{suite} begin -->", f"<!-- rtl-report:{suite} end -->"


def update_index(index: Path, suite: str, section: str, scale: str) -> None:
    """Replace this suite's section of index.md (or append it); other suites' sections stay as they are."""
    begin, end = _section_markers(suite)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = index.read_text(encoding="utf-8") if index.exists() else (
        f"# Results at scale `{scale}`\n\nWritten by `rtl report`: one section per suite (projects/*.yaml).\n\n")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda m: block, text, count=1) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    _atomic_write(index, text)


def write_report(spec: dict, scale: str, out: str | Path = "docs/results", *,
                 experiment_ids: list[str] | None = None, warn=None) -> dict:
    """Build every table and figure of `spec` at `scale` into `<out>/<scale>/` and update index.md.

    Never fails on missing runs (a "not run" cell, a warning). Returns {"dir", "files", "tables"
    (name → tidy DataFrame), "markdown" (name → str), "figures" (name → matplotlib Figure),
    "runs" (select_runs-style DataFrame of every step read), "warnings"}.
    """
    import mlflow

    from ..tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    variables = check_scale(spec, scale)
    out_dir = Path(out) / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(msg)

    sel = RunSelector(scale, experiment_ids)
    files, tables, markdown, figures = [], {}, {}, {}
    section = [f"## {_md(spec['title'])}", "", suite_line(spec, scale, with_title=False), ""]
    claims = []
    for entry in spec["report"]:
        if entry["type"] == "claim":
            if _at_scale(entry, scale):
                claims.append(entry | evaluate_claim(entry, sel))
            continue
        name, title = entry["name"], _subst(entry["title"], variables)
        if entry["type"] == "table":
            frame = table_frame(entry, sel, variables, _warn)
            md = render_table(entry | {"title": title}, frame, spec, scale)
            _atomic_write(out_dir / f"{name}.md", md)
            _write_csv(frame[TABLE_COLUMNS], out_dir / f"{name}.csv")
            files += [out_dir / f"{name}.md", out_dir / f"{name}.csv"]
            tables[name], markdown[name] = frame[TABLE_COLUMNS], md
            section += [render_table(entry | {"title": title}, frame, spec, scale, with_suite=False),
                        f"Values: [{name}.csv]({name}.csv)", ""]
            continue
        note = _subst(entry.get("paper_note"), variables)
        if entry["kind"] == "artifact":
            path, csv = _copy_artifact(entry, sel, out_dir, _warn)
            _write_csv(csv, out_dir / f"{name}.csv")
            files += ([path] if path else []) + [out_dir / f"{name}.csv"]
            runs = f"Run: `{entry['step']}` {csv['run_id'][0]}." if path else f"Not run: `{entry['step']}`."
        else:
            points, hlines = figure_frames(entry, sel, variables, _warn)
            if entry["kind"] == "lines":
                fig = plots.plot_lines(points, hlines, title=title, x=entry["x"], note=note)
            else:
                fig = plots.plot_bars(points, title=title, x=entry["x"], note=note)
            path = plots.save_figure(fig, out_dir / f"{name}.png")
            figures[name] = fig
            csv = _figure_csv(points, hlines)
            _write_csv(csv, out_dir / f"{name}.csv")
            files += [path, out_dir / f"{name}.csv"]
            runs = _runs_line(pd.DataFrame(
                [{"step": st, "run_id": sel.run(st)["run_id"] if sel.run(st) else None}
                 for st in report_steps({"report": [entry]}, scale)], columns=["step", "run_id"]))
        section += [f"### {_md(title)}", ""]
        section += [f"![{_md(title)}]({path.name})", ""] if path else [f"*{NOT_RUN}*", ""]
        section += ([f"*{_md(note)}*", ""] if note else []) + [f"{runs} Values: [{name}.csv]({name}.csv)", ""]
    if claims:
        section += render_claims(claims)
        frame = pd.DataFrame([{"claim": c["name"], "text": c["text"], "paper": c["paper"], "check": c["check"],
                               "values": c["shown"], "verdict": c["verdict"]} for c in claims])
        _write_csv(frame, out_dir / f"{spec['name']}-claims.csv")
        files.append(out_dir / f"{spec['name']}-claims.csv")
        for c in claims:
            if c["verdict"] == NOT_RUN:
                _warn(f"claim {c['name']!r}: not run ({', '.join(k for k, v in c['values'].items() if v is None)})")
    update_index(out_dir / "index.md", spec["name"], "\n".join(section), scale)
    files.append(out_dir / "index.md")
    return {"dir": out_dir, "files": files, "tables": tables, "markdown": markdown, "figures": figures,
            "runs": sel.frame(), "warnings": warnings, "claims": claims}


def render_claims(claims: list[dict]) -> list[str]:
    """The claims table of a suite's section: what the paper says, our check with numbers, the verdict."""
    lines = ["### Claims", "", "| claim | paper | check (our numbers) | verdict |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {_md(c['text'])} | {_md(c['paper'])} | `{c['check']}` → `{c['shown']}` | **{c['verdict']}** |")
    return lines + [""]


def experiment_ids_for(name: str | None) -> list[str] | None:
    """None (search all experiments) for no name; ConfigError if the named experiment does not exist."""
    if not name:
        return None
    from mlflow.tracking import MlflowClient

    from ..tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(f"experiment={name!r} does not exist in the tracking store; "
                          f"existing: {', '.join(names) or 'none'}")
    return [exp.experiment_id]


def run_report(cfg) -> dict:
    """`rtl report`: validate the suite and scale first, then write the report inside its own MLflow run
    (its files logged as artifacts under report/<scale>/) and print the tables."""
    from ..tracking import tracked_run

    spec = load_report_spec(cfg.project)
    check_scale(spec, cfg.scale)
    experiment_ids = experiment_ids_for(cfg.experiment)
    tags = {"rtl.report_suite": spec["name"], "rtl.report_scale": cfg.scale}
    with tracked_run("report", cfg.to_params(), tags, experiment=cfg.experiment or "robust-transfer") as log:
        result = write_report(spec, cfg.scale, cfg.out, experiment_ids=experiment_ids)
        for path in result["files"]:
            log.log_artifact(path, f"report/{cfg.scale}")
        n_missing = sum(int((t["ours"].isna()).sum()) for t in result["tables"].values())
        log.log_metrics({"report_missing_cells": n_missing, "report_warnings": len(result["warnings"])})
        verdicts = [c["verdict"] for c in result["claims"]]
        log.log_metrics({f"claims_{v.replace(' ', '_')}": verdicts.count(v) for v in set(verdicts)})
        for md in result["markdown"].values():
            print("\n" + md)
        for c in result["claims"]:
            print(f"claim {c['name']}: {c['verdict']}  ({c['shown']})")
        written = ", ".join(p.name for p in result["files"])
        print(f"report {spec['name']} at scale {cfg.scale}: {result['dir']}/ ({written}) — run {log.run_id}")
        result["run_id"] = log.run_id
        return result


__all__ = ["load_report_spec", "check_scale", "scale_description", "report_steps", "select_runs", "RunSelector",
           "metric_value", "is_accuracy", "format_value", "table_frame", "render_table", "figure_frames",
           "write_report", "update_index",
           "experiment_ids_for", "run_report", "FIGURE_KINDS", "TABLE_COLUMNS"]
