"""Files written whole or not at all, and YAML read safely with line numbers.

- `atomic_write(path, write_to)`: `write_to(tmp)` writes a temp file beside `path`, which then replaces
  `path` in one rename (readers see the old file or the whole new one, never a partial one); on any
  error the temp file is removed. `atomic_write_bytes`, `atomic_write_text`, `atomic_copy` build on it,
  `atomic_dir_write` is the same for a directory (checkpoints).
- `load_yaml(text, source, error, what)`: the one YAML loader of project files (search spaces, suites,
  reports): `yaml.safe_load` only, every problem one `FILE:LINE: key.path: message` line (`Where`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from .errors import ConfigError, UserError


def atomic_write(path: str | Path, write_to) -> None:
    """`write_to(tmp_path: str)` writes the content; it then replaces `path` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_to(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_copy(src: str | Path, dest: str | Path) -> None:
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def atomic_dir_write(path: str | Path, write) -> None:
    """`write(tmp_dir: Path)` fills a temp dir beside `path`, which is then swapped in with renames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _line_map(node, path=(), out=None) -> dict[tuple, int]:
    """1-based line of every key path in a composed YAML document."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _line_map(v, path + (i,), out)
    return out


class Where:
    """Turns a key path into `FILE:LINE: key.path` for messages."""

    def __init__(self, source: str, lines: dict[tuple, int], error: type[UserError] = ConfigError):
        self.source, self.lines, self.error_class = source, lines, error

    def line(self, path: tuple) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple, message: str) -> UserError:
        dotted = ".".join(str(p) for p in path) if path else "(top level)"
        return self.error_class(f"{self.source}:{self.line(path)}: {dotted}: {message}")


def load_yaml(text: str, source: str, error: type[UserError] = ConfigError,
              what: str = "a YAML mapping") -> tuple[dict, Where]:
    """Safe-load YAML text; every problem becomes `error` with `FILE:LINE` (search spaces, suites)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise error(f"{source}:{line}: YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise error(f"{source}: YAML error: {str(e).splitlines()[0]}") from None
    where = Where(source, _line_map(node) if node is not None else {}, error)
    if not isinstance(data, dict):
        raise where.error((), what)
    return data, where
