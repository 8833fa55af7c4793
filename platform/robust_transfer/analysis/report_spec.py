"""The `report:` section of a suite YAML (projects/*.yaml): read, validated, and asked which steps it reads.
Run selection is analysis/report_runs.py; tables, figures and files are analysis/report.py."""
from __future__ import annotations

import math
import re
from pathlib import Path

from ..errors import ConfigError
from .spec_fields import list_field as _list, str_field as _str
from ..io import load_yaml
from .claims import check_explains, claim_entry

FIGURE_KINDS = ("lines", "bars", "artifact", "front")
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
    """The suite file through the one project-file loader (io.load_yaml): one line naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"project={str(path)!r} does not exist; give a suite YAML, "
                          "e.g. projects/table2.yaml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"project={str(path)!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    data, _ = load_yaml(text, f"project={str(path)!r}", ConfigError,
                        "expected a mapping with name, title, scales, steps and report")
    return data


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
    if isinstance(cols, list):   # headers from the metrics alone (report_tables.metric_header)
        cols = {c: None for c in cols}
    cols = _mapping(cols, "columns", where)
    columns = {}
    for m, h in cols.items():
        if isinstance(h, dict):  # {paper: "val."}: the paper's header for this column, shown beside ours
            if set(h) != {"paper"}:
                raise ConfigError(f"{where}: columns.{m}={h!r}: give a header, or {{paper: <the paper's header>}}")
            h = h["paper"]
        columns[_metric(m, where)] = _str(h, f"columns.{m}", where, required=False)
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
    if kind == "front":   # a scatter of runs on two metrics: point sets (analysis/front.py), each with its staircase
        from .front import point_set_entry

        entry["x"] = _metric(raw.get("x"), where, "x")
        entry["y"] = [_metric(raw.get("y"), where, "y")]
        entry["series"] = []
        for j, s in enumerate(_list(raw.get("series"), "series", where)):
            pset = point_set_entry(s, f"{where}, series {j + 1}")
            if not pset["label"]:
                raise ConfigError(f"{where}, series {j + 1}: `label` is required")
            entry["series"].append(pset)
        entry["hlines"] = []
        return entry
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
    report, seen, claims = [], set(), []
    for i, raw in enumerate(raw_report, 1):
        if not isinstance(raw, dict) or sum(k in raw for k in ("table", "figure", "claim")) != 1:
            raise ConfigError(f"{_where(path, str(i))}: each entry needs exactly one of `table:`, `figure:` or `claim:`")
        if "claim" in raw:
            entry = claim_entry(raw, _where(path, str(i)))
            entry["scales"] = _scales_of(raw.get("scales"), _where(path, str(i)))
            claims.append((_where(path, str(i)), entry))
        else:
            entry = _table_entry(raw, path, i) if "table" in raw else _figure_entry(raw, path, i)
        if entry["name"] in seen or entry["name"] == "index":
            raise ConfigError(f"{_where(path, repr(entry['name']))}: the name is already used by another entry "
                              f"(or is `index`): each writes {entry['name']}.csv; give every table and figure "
                              "its own name")
        seen.add(entry["name"])
        report.append(entry)
    check_explains(claims)
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
