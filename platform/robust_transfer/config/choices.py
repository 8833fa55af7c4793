"""The fields with a fixed set of values, and those values: what `rtl <cmd> --help` lists after a flag
and what tests/test_bad_input.py derives its bad-choice rows from. The values are the constants the
configs validate with (`one_of`), gathered by field name; nothing here is a second list."""
from __future__ import annotations

from ..device import DEVICES
from ..models import HEAD_KINDS, list_archs
from .analysis import ANALYSES, SUITE_REUSE
from .common import CHANNELS_LAST, PRECISIONS, SCHEDULES
from .import_model import FORMATS, IMPORT_NORMS
from .search import SEARCH_BACKENDS, TRIALS_SCOPES
from .train import TRAIN_MODES
from .transfer import LWF_DISTANCES, LWF_TEACHERS

_BY_FIELD: dict[str, tuple[str, ...]] = {
    "mode": TRAIN_MODES, "schedule": SCHEDULES, "precision": PRECISIONS, "channels_last": CHANNELS_LAST,
    "distance": LWF_DISTANCES, "teacher": LWF_TEACHERS, "backend": SEARCH_BACKENDS, "trials_scope": TRIALS_SCOPES,
    "what": ANALYSES, "reuse": SUITE_REUSE, "norm": IMPORT_NORMS, "format": FORMATS, "head": HEAD_KINDS,
    "device": (*DEVICES, "cuda:N"),
}


def field_choices(cls) -> dict[str, tuple[str, ...]]:
    """{field: its allowed values} for the fields of config class `cls` that have a fixed set (a config's
    own `SPLITS` for `split`; the model registry's names for `arch`, the WRN family as its pattern)."""
    from dataclasses import fields

    out = {}
    for f in fields(cls):
        if f.name == "split" and hasattr(cls, "SPLITS"):
            out[f.name] = tuple(cls.SPLITS)
        elif f.name == "arch":
            out[f.name] = tuple(list_archs())
        elif f.name in _BY_FIELD:
            out[f.name] = _BY_FIELD[f.name]
    return out
