"""`rtl`: one subcommand per entry point. Thin: parse → validated config → strategy → tracking.

Flags are built from the config dataclasses (`lambda_d` → `--lambda-d`), so `rtl` and the
MLproject entry points take exactly the same parameters. Errors the user can fix print one line
(`error: ...`) and exit with the code of their kind (README: "Errors and exit codes").
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
    from . import commands

    return commands.COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rtl", description="Adversarially robust transfer learning, tracked in MLflow.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (cls, _fn, help_) in _commands().items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_config_arguments(p, cls)
    return parser


def _fail_launcher_run() -> None:
    """Under `mlflow run`, a run exists before we parse anything: mark it FAILED on a user error."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from .tracking import mlflow_client

        client = mlflow_client()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
    except Exception:
        pass


def quiet_third_party_output() -> None:
    """Keep the terminal for our progress and our one-line errors."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's INFO lines ("Creating initial MLflow database tables...") would bury our errors. Import it
    # first: importing mlflow configures its loggers and would reset the level.
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow's own import prints a notice about `Any` type hints in its response types: not ours.
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RTL_DEBUG") == "1"
    from .launch import enter_launch_dir

    enter_launch_dir()  # under `mlflow run`: relative paths mean the user's directory (launch.py)
    quiet_third_party_output()
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:  # name the subcommand's help, not the top-level one
            raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (see `rtl {args.command} --help`)")
        cls, fn, _ = _commands()[args.command]
        cfg = config_from_args(cls, args)
        fn(cfg)
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
        print(f"error: internal error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        _fail_launcher_run()
        return 1


if __name__ == "__main__":
    sys.exit(main())
