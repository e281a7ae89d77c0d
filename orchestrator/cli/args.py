"""The command line's shared pieces: the parser class, options every command takes,
argument types and completers."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

AddCommand = Callable[[str, str], argparse.ArgumentParser]  # adds one subcommand's parser


EXIT_HELP = """exit codes:
  0  done, or nothing to do
  1  a migration or database operation failed
  2  usage or configuration error
  3  refused by policy (gate, approval, downgrade policy, lint, checksum or schema
     drift); for `drift`: the schema differs
  4  the migration lock was not acquired in time
"""


def common_options() -> Parser:
    """Options accepted before or after the command's name."""
    common = Parser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the result as JSON on stdout (refusals and errors too)",
    )
    common.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=argparse.SUPPRESS,
        help="stderr events: one JSON object per line, or one short line per event for a "
        "person (default auto: console on a terminal, JSON otherwise)",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only the result: no events or progress on stderr (errors still show)",
    )
    return common


class Version(argparse.Action):
    """--version: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        print(f"orchestrator {package_version()}")
        parser.exit()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alembic-orchestrator")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from orchestrator import __version__

        return __version__


def env_names(prefix: str = "", **_kw: Any) -> list[str]:
    """Completion: the environment files' names (no validation, no database)."""
    from orchestrator.core.config import Settings

    try:
        directory = Settings().environments_path
        names = sorted({p.stem for p in [*directory.glob("*.yaml"), *directory.glob("*.yml")]})
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in names if n.startswith(prefix)]


def revision_ids(prefix: str = "", **_kw: Any) -> list[str]:
    """Completion: revision ids, and head/base."""
    try:
        from orchestrator.running.app import App

        revs = [r.revision for r in App.load().graph]
    except Exception:
        revs = []
    return [r for r in ["head", "base", *sorted(revs)] if r.startswith(prefix)]


def env_arg(p: argparse.ArgumentParser, *names: str, **kwargs: Any) -> None:
    kwargs.setdefault("metavar", "ENV")
    action = p.add_argument(*names, **kwargs)
    action.completer = env_names  # type: ignore[attr-defined]


def rev_arg(p: argparse.ArgumentParser, *names: str, **kwargs: Any) -> None:
    kwargs.setdefault("metavar", "REV")
    action = p.add_argument(*names, **kwargs)
    action.completer = revision_ids  # type: ignore[attr-defined]


def revision_arg(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "an empty revision names nothing: give REV, or leave it out"
        )
    return value


def seconds_arg(value: str) -> float:
    import math

    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a finite number of seconds, 0 or more")
    return seconds


def text_arg(value: str) -> str:
    limit = 4096  # orchestrator.core.config.MAX_TEXT, without importing pydantic for --help
    if len(value) > limit:
        raise argparse.ArgumentTypeError(f"{len(value)} characters long; at most {limit}")
    return value


def count_arg(value: str) -> int:
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0, 1, 2, ...)")
    return int(value)


def run_options(p: argparse.ArgumentParser, fleet: bool = True) -> None:
    p.add_argument(
        "--approve",
        action="store_true",
        help="approve a run where policy.require_approval is set (on a terminal you may "
        "type the environment's name instead)",
    )
    p.add_argument(
        "--ticket", metavar="ID", type=text_arg, help="change ticket, recorded on every event"
    )
    p.add_argument(
        "--lock-timeout",
        type=seconds_arg,
        metavar="S",
        help="seconds to wait for the migration lock (default: the environment's lock.timeout)",
    )
    if fleet:
        group = p.add_argument_group("fleets (environments with many databases)")
        group.add_argument(
            "--parallel", type=int, default=1, metavar="N", help="worker processes (default 1)"
        )
        group.add_argument(
            "--canary",
            type=int,
            default=0,
            metavar="K",
            help="migrate the first K databases alone first",
        )
        group.add_argument(
            "--on-error",
            choices=["stop", "continue"],
            default="stop",
            help="after a database fails: stop (default; the rest are not run) or continue",
        )
        group.add_argument(
            "--shard",
            metavar="I/N|auto",
            help="only every N-th database from the I-th; `auto` reads it from the CI or "
            "scheduler (CI_NODE_INDEX, JOB_COMPLETION_INDEX, ORCHESTRATOR_SHARD)",
        )


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake comes back to `main` (which owes `--json` a result)
    instead of exiting on the spot."""

    def error(self, message: str) -> NoReturn:
        raise UsageMistake(self, message)


class UsageMistake(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser, self.message = parser, message
