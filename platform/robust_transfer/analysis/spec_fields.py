"""Field readers shared by the report spec (report_spec.py) and the front/hypervolume sets (front.py): one line
naming the field and what it must be. A leaf module: report_spec imports front (through claims), so neither
can hold these for the other."""
from __future__ import annotations

import re

from ..errors import ConfigError


def str_field(value, what: str, where: str, *, required: bool = True, pattern: re.Pattern | None = None) -> str | None:
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


def list_field(value, what: str, where: str) -> list:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: `{what}` must be a non-empty list")
    return value
