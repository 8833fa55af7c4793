"""`rtl`: one subcommand per entry point. Thin: parse → validated config → command → tracking.

The subcommands, their flags and their help are derived from the entry points' declarations
(commands/registry.py) and config dataclasses (`lambda_d` → `--lambda-d`), so `rtl` and the MLproject
entry points take exactly the same parameters; either spelling of a name works (`rtl retrain_blocks`,
`rtl import_model`). Errors the user can fix print one line (`error: ...`) and exit with the code of
their kind (README: "Errors and exit codes").

`rtl --help` and `rtl <cmd> --help` import neither torch nor MLflow (tests/test_cli.py): the commands
import them when they run, and MLflow's output is quieted only then.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import MISSING, fields

from .config.coerce import field_types, parse_bool, typed
from .errors import ConfigError, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        raise ConfigError(f"{message} (see `{self.prog} --help`)")  # `rtl --help` or `rtl train --help`


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    from .helptext import flag_help

    types = field_types(cls)
    helps = flag_help(cls)  # description (the field's comment); allowed values; default
    for f in fields(cls):
        typ = types[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if typ is bool:
            parser.add_argument(flag, dest=f.name, type=parse_bool(f.name), nargs="?", const=True, default=default,
                                metavar="BOOL", help=helps[f.name])
        else:
            parser.add_argument(flag, dest=f.name, type=typed(f.name, typ), default=default,
                                metavar=typ.__name__.upper() if typ in (int, float) else "VALUE", help=helps[f.name])


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _commands():
    from .commands import COMMANDS

    return COMMANDS


def _command_position(argv: list[str]) -> int | None:
    """Where the subcommand is: the first word that is not an option (`rtl [--debug] <command> ...`)."""
    return next((i for i, a in enumerate(argv) if not a.startswith("-")), None)


def canonical_argv(argv: list[str]) -> list[str]:
    """The subcommand in its shown spelling: `retrain_blocks` → `retrain-blocks`, `import_model` → `import`."""
    from .config import canonical_entry_point

    argv = list(argv)
    i = _command_position(argv)
    if i is not None and canonical_entry_point(argv[i]):
        argv[i] = canonical_entry_point(argv[i])
    return argv


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand with its flags; with `only`, that subcommand's flags alone (none for `only=""`)."""
    parser = _Parser(prog="rtl", description="Adversarially robust transfer learning, tracked in MLflow.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, ep in _commands().items():
        p = sub.add_parser(name, help=ep.help, description=ep.help)
        if only is None or only == name:
            add_config_arguments(p, ep.config)
    return parser


def _fail_launcher_run() -> None:
    """Under `mlflow run`, a run exists before we parse anything: mark it FAILED on a user error."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        quiet_third_party_output()
        from .tracking import mlflow_client

        client = mlflow_client()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
    except Exception:
        pass


def _quiet_without_importing() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's own import prints a notice about `Any` type hints in its response types: not ours.
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred", category=UserWarning)


def quiet_third_party_output() -> None:
    """Keep the terminal for our progress and our one-line errors."""
    _quiet_without_importing()
    # MLflow's INFO lines ("Creating initial MLflow database tables...") would bury our errors. Import it
    # first: importing mlflow configures its loggers and would reset the level.
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = canonical_argv(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RTL_DEBUG") == "1"
    from .launch import enter_launch_dir

    enter_launch_dir()  # under `mlflow run`: relative paths mean the user's directory (launch.py)
    _quiet_without_importing()  # (a config's checks may import MLflow; the rest waits until a command runs)
    try:
        i = _command_position(argv)   # (no command: `rtl --help` lists the subcommands, no flags needed)
        args, unknown = build_parser(only=argv[i] if i is not None else "").parse_known_args(argv)
        if unknown:  # name the subcommand's help, not the top-level one
            raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (see `rtl {args.command} --help`)")
        ep = _commands()[args.command]
        cfg = config_from_args(ep.config, args)
        quiet_third_party_output()
        ep.run(cfg)
        return 0
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        _fail_launcher_run()
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user error: say so, keep the traceback behind --debug
        if debug:
            raise
        from .distributed import peer_lost

        lost = peer_lost(e)   # (a torchrun rank died while this one was inside a library call)
        if lost is not None:
            print(f"error: {lost}", file=sys.stderr)
            _fail_launcher_run()
            return lost.exit_code
        print(f"error: internal error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        _fail_launcher_run()
        return 1


if __name__ == "__main__":
    sys.exit(main())
