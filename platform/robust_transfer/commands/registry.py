"""One declaration per entry point, next to its command (the shape of timm's `@register_model`):

    @entry_point(TrainConfig, help="Train a source model: natural, pgd, free or fgsm-rs (Table 1).")
    def run_train(cfg: TrainConfig) -> dict: ...

Everything else is derived from it and from the config class it names (whose `ENTRY_POINT` is the name,
config/entry_points.py): the `rtl` subcommand, its flags and their `--help` lines (cli.py, helptext.py),
MLproject (mlproject.py), the name → config table search and suites read (`config.CONFIGS`), the
spellings `rtl` accepts, and the generic bad-input rows (tests/test_bad_input.py).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ..config import CONFIGS, canonical_entry_point, mlproject_name


class EntryPoint(NamedTuple):
    config: type                 # the config dataclass: its fields are the flags / MLproject parameters
    run: Callable[..., dict]     # config in, one tracked run, a dict out
    help: str                    # one line: what the entry point does (`rtl --help`, MLproject's comment)

    @property
    def name(self) -> str:
        """The `rtl` spelling (`retrain-blocks`)."""
        return self.config.ENTRY_POINT  # type: ignore[attr-defined]  # every entry point's config declares it

    @property
    def mlproject_name(self) -> str:
        """MLproject's spelling (`retrain_blocks`, `import_model`)."""
        return mlproject_name(self.name)


_DECLARED: dict[str, EntryPoint] = {}


def entry_point(config: type, *, help: str):
    """Declare `fn` the command of `config`'s entry point."""
    name = vars(config).get("ENTRY_POINT")
    if name not in CONFIGS or CONFIGS[name] is not config:
        raise TypeError(f"{config.__name__} names no entry point: give it ENTRY_POINT = \"<name>\" (config/)")

    def register(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in _DECLARED and _DECLARED[name].run is not fn:
            raise TypeError(f"entry point {name!r} is declared twice: {_DECLARED[name].run.__name__}, {fn.__name__}")
        _DECLARED[name] = EntryPoint(config, fn, help)
        return fn
    return register


def declared() -> dict[str, EntryPoint]:
    """Every declared entry point by name, in `config.CONFIGS`' order. (commands/__init__.py imports every
    command module first, so that every declaration has run.)"""
    missing = sorted(set(CONFIGS) - set(_DECLARED))
    if missing:
        raise TypeError(f"entry point(s) {', '.join(missing)} have a config but no command: "
                        "declare one with @entry_point in commands/")
    return {name: _DECLARED[name] for name in CONFIGS}


def run_entry_point(name: str, cfg) -> dict:
    """Run the command of entry point `name` (any spelling) on its config: what search trials run."""
    return declared()[canonical_entry_point(name)].run(cfg)
