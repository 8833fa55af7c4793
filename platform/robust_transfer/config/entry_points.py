"""The entry points as the library layers see them: name → config class, and their spellings.

An entry point is declared once, in two halves that cannot drift: its config class names it
(`ENTRY_POINT = "retrain-blocks"`, and `MLPROJECT_NAME` where MLproject spells it otherwise), and its
command says `@entry_point(RetrainBlocksConfig, help=...)` (commands/registry.py). This half is what
search spaces and suite plans need (name → config class) and they must not import `commands/`, so it
lives here and is derived from the config classes themselves: nothing to keep by hand.

Spellings: `rtl` shows the name (`retrain-blocks`, `import`), MLproject its own (`retrain_blocks`,
`import_model`); `rtl`, search spaces and suites accept any of them.
"""
from __future__ import annotations

import importlib
import pkgutil


def _entry_point_configs() -> dict[str, type]:
    """Every class in config/ that names an entry point (in its own body, not inherited), by name."""
    package = __name__.rsplit(".", 1)[0]
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        for cls in vars(module).values():
            if isinstance(cls, type) and cls.__module__ == module.__name__ and "ENTRY_POINT" in vars(cls):
                name = cls.ENTRY_POINT  # type: ignore[attr-defined]  # checked in vars(cls) just above
                if name in found:
                    raise ValueError(f"entry point {name!r} is named by {found[name].__name__} and {cls.__name__}")
                found[name] = cls
    return dict(sorted(found.items()))


# entry point (rtl spelling) → its config class, sorted by name (the order of `rtl --help` and MLproject)
CONFIGS: dict[str, type] = _entry_point_configs()


def mlproject_name(name: str) -> str:
    """`retrain-blocks` → `retrain_blocks`; a config's MLPROJECT_NAME where it has one (`import_model`)."""
    return vars(CONFIGS[name]).get("MLPROJECT_NAME") or name.replace("-", "_")


def spellings(name: str) -> tuple[str, ...]:
    """Every spelling `name` is accepted under, the shown one first."""
    out = [name, mlproject_name(name), name.replace("-", "_")]
    return tuple(dict.fromkeys(out))


_CANONICAL = {spelling: name for name in CONFIGS for spelling in spellings(name)}


def canonical_entry_point(name) -> str | None:
    """Any spelling (`finetune_adv`, `finetune-adv`, `import_model`) → the CONFIGS key; None if unknown."""
    return _CANONICAL.get(name) if isinstance(name, str) else None
