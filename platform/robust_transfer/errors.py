"""User-facing errors: one clear line, a distinct exit code, no traceback (unless --debug).

Everything the user can get wrong (a value, a file, a model that does not fit the data) raises a
subclass of `UserError`; `cli.main` prints `error: <message>` and exits with `exit_code`.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for, explained in one line."""

    exit_code = 2


class ConfigError(UserError):
    """A parameter value is unknown, out of range or of the wrong type."""

    exit_code = 2


class DataError(UserError):
    """A dataset is missing, unreadable, or cannot satisfy the request (e.g. per_class)."""

    exit_code = 3


class ModelError(UserError):
    """A model/checkpoint is missing, corrupted, unsafe, or does not match the data/arch."""

    exit_code = 4


class SearchError(UserError):
    """A search space, study or storage problem."""

    exit_code = 5


class RegistryError(UserError):
    """A registry name/version/alias problem, or a promotion refused by policy."""

    exit_code = 6


class SuiteError(UserError):
    """A suite file (projects/*.yaml) problem, or a suite step that failed."""

    exit_code = 7


class PeerLost(UserError):
    """Another rank of a data-parallel (torchrun) job died or stopped answering (distributed.py)."""

    exit_code = 8


def one_of(name: str, value: object, allowed) -> ConfigError:
    """The standard message for a value outside a fixed set."""
    return ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def check_range(name: str, value, low=None, high=None, *, low_inclusive=True, high_inclusive=True):
    """Raise ConfigError unless low <(=) value <(=) high. Returns value for chaining."""
    ok = True
    if low is not None:
        ok &= value >= low if low_inclusive else value > low
    if high is not None:
        ok &= value <= high if high_inclusive else value < high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        lb = "[" if low_inclusive and low is not None else "("
        hb = "]" if high_inclusive and high is not None else ")"
        raise ConfigError(f"{name}={value!r} is out of range; allowed: {lb}{lo}, {hi}{hb}")
    return value
