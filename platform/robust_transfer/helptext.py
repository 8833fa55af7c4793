"""`rtl <command> --help`: one line per flag — what it is, the allowed values, the default.

Each part has one source:
- what a flag is: the trailing `# comment` of its config field (read from the classes' source, over the
  class and its bases, so a subclass that only changes a default keeps its base's comment). Every field
  has one (tests/test_cli.py holds it); a comment that says `default: ...` replaces the default shown.
- the allowed values: `config.field_choices` (the constants the configs validate with, the model
  registry's names for `--arch`), and the shipped search spaces / suites for `--space` / `--project`.
- the default: the field's.
"""
from __future__ import annotations

import functools
import inspect
import io
import re
import tokenize
import typing
from dataclasses import MISSING, fields

_FIELD = re.compile(r"^\s+([A-Za-z_]\w*)\s*:")
_STATES_DEFAULT = re.compile(r"\bdefault:")
SHIPPED = {"space": "search_spaces", "project": "projects"}   # fields that take a shipped file by name (resources.py)


def field_docs(cls) -> dict[str, str]:
    """{field: its trailing comment}, over the class and its bases (a subclass's comment wins)."""
    return dict(_field_docs(cls))


@functools.cache   # (the source is read and tokenized once per class, not on every `main()` of a test run)
def _field_docs(cls) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or "__dataclass_fields__" not in vars(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names = set(vars(klass)["__dataclass_fields__"])
        comments: dict[int, str] = {}
        try:
            for tok in tokenize.generate_tokens(io.StringIO(source).readline):
                if tok.type == tokenize.COMMENT:
                    comments[tok.start[0]] = tok.string.lstrip("#").strip()
        except (tokenize.TokenError, IndentationError):
            continue
        lines = source.splitlines()
        last = None
        for i, line in enumerate(lines, start=1):
            m = _FIELD.match(line)
            if m and m.group(1) in names and "=" in line:
                last = m.group(1)
                if i in comments:
                    docs[last] = comments[i]
            elif last and line.strip().startswith("#") and i in comments and last in docs:
                docs[last] += " " + comments[i]  # a comment continued on the next line
            elif line.strip():
                last = None
    return docs


def _show(value) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flag_help(cls) -> dict[str, str]:
    """{field: one help line}: description; allowed values; default."""
    from .config import field_choices
    from .config.coerce import base_type

    docs, choices = field_docs(cls), field_choices(cls)
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        doc = docs.get(f.name) or f.name.replace("_", " ")   # (a field without a comment fails tests/test_cli.py)
        parts = [doc.rstrip(".")]
        base = base_type(hints[f.name])
        if f.name in SHIPPED:
            from .resources import names

            parts.append("shipped: " + ", ".join(names(SHIPPED[f.name])))
        if base is bool:
            parts.append("one of: true, false")
        elif f.name in choices:
            parts.append("one of: " + ", ".join(choices[f.name]))
        elif base in (int, float):
            parts.append("a whole number" if base is int else "a number")
        if not _STATES_DEFAULT.search(doc):
            parts.append(f"default: {_show(f.default if f.default is not MISSING else None)}")
        out[f.name] = "; ".join(parts).replace("%", "%%")  # argparse formats help with %
    return out
