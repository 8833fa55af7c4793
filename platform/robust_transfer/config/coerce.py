"""The one field coercion: a text (a flag, an MLproject parameter, a YAML/`set` value, a sampled value)
→ the config field's type. The CLI, the MLproject generator, search spaces and suite plans all use it."""
from __future__ import annotations

import typing
from dataclasses import fields

from ..errors import ConfigError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(name):
    """A converter for boolean field `name`: true/false (1/0, yes/no, on/off), else ConfigError."""
    def conv(s: str) -> bool:
        if str(s).lower() in TRUE:
            return True
        if str(s).lower() in FALSE:
            return False
        raise ConfigError(f"{name}={s!r} is not a boolean; use true or false")
    return conv


def typed(name, typ):
    """A converter for field `name` of type `typ`: '' or 'none' → None, else typ(s) or ConfigError."""
    def conv(s: str):
        if s == "" or str(s).lower() == "none":
            return None
        try:
            return typ(s)
        except ValueError:
            kind = {int: "a whole number", float: "a number"}.get(typ, typ.__name__)
            raise ConfigError(f"{name}={s!r} is not {kind}") from None
    return conv


def base_type(tp):
    """`int | None` → int."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def field_types(cls) -> dict[str, type]:
    """Field name → its base type (int, float, str, bool) for a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: base_type(hints[f.name]) for f in fields(cls)}


def coerce_value(cls, name: str, value):
    """A YAML/`set`/sampled value as the field's type (`"20"` → 20, `"true"` → True)."""
    typ = field_types(cls)[name]
    if isinstance(value, str):
        return parse_bool(name)(value) if typ is bool else typed(name, typ)(value)
    if value is None:
        return None
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name}={value!r} must be a whole number")
        return int(value)
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be a number")
        return float(value)
    if typ is str:
        return str(value)
    return value


def coerce_values(cls, values: dict) -> dict:
    return {k: coerce_value(cls, k, v) for k, v in values.items()}
