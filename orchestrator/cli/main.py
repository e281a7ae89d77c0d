"""`main(argv) -> exit code`: parse, call the command, turn every error into one paragraph
and its exit code."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from orchestrator.cli.action_help import action_help
from orchestrator.cli.args import UsageMistake
from orchestrator.cli.audit import cmd_audit
from orchestrator.cli.parser import build_parser
from orchestrator.cli.plan import cmd_plan
from orchestrator.cli.project import cmd_check, cmd_drift, cmd_init
from orchestrator.cli.runs import (
    cmd_accept,
    cmd_baseline,
    cmd_downgrade,
    cmd_keys,
    cmd_migrate,
    cmd_promote,
    cmd_rollout,
)
from orchestrator.cli.shared import Out, print_json_error, report_error
from orchestrator.cli.status import cmd_current, cmd_envs, cmd_history, cmd_status

COMMANDS: dict[str, Callable[[argparse.Namespace, Out], int]] = {
    "envs": cmd_envs,
    "status": cmd_status,
    "plan": cmd_plan,
    "migrate": cmd_migrate,
    "promote": cmd_promote,
    "rollout": cmd_rollout,
    "downgrade": cmd_downgrade,
    "baseline": cmd_baseline,
    "accept": cmd_accept,
    "keys": cmd_keys,
    "audit": cmd_audit,
    "drift": cmd_drift,
    "check": cmd_check,
    "current": cmd_current,
    "history": cmd_history,
    "init": cmd_init,
}


QUIET_COMMANDS = {"envs", "history", "init"}
LOG_FORMATS = ("auto", "json", "console")


def console_main() -> NoReturn:
    """The `orchestrator` command, with the garbage collector kept off what its imports made.

    Imports make many long-lived objects and little garbage, yet set off collections that
    cost a fifth of their time: the collector stays off until they are done (`load_app`). At
    the end everything alive is frozen, so the interpreter's shutdown skips its full
    collections over it (0.2-0.5 s on a small machine). Output is still flushed, atexit
    handlers and finalizers still run.
    """
    gc.disable()
    try:
        code = main()
        sys.stdout.flush()  # here, not at exit: a reader that left is answered below
    except BrokenPipeError:
        code = _reader_left()
    gc.freeze()
    sys.exit(code)


def _reader_left() -> int:
    """`orchestrator envs --json | head`: the reader left; quiet, as a program killed by
    SIGPIPE would be (exit 141), with no flush error at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete)
        import argcomplete

        argcomplete.autocomplete(parser)
    own = action_help(argv)
    if own is not None:  # `plan show --help`: its own help, not plan's
        print(own)
        return 0
    try:
        args = parser.parse_args(argv)
    except UsageMistake as mistake:
        mistake.parser.print_usage(sys.stderr)
        print(f"{mistake.parser.prog}: error: {mistake.message}", file=sys.stderr)
        if "--json" in argv:
            print_json_error(mistake.message, 2, "error")
        return 2
    as_json = getattr(args, "json", False)
    log_format = getattr(args, "log_format", None) or os.environ.get(
        "ORCHESTRATOR_LOG_FORMAT", "auto"
    )
    from orchestrator.core.errors import OrchestratorError
    from orchestrator.core.logging import configure_logging, wants_json

    if log_format not in LOG_FORMATS:
        text = f"ORCHESTRATOR_LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}."
        if as_json:
            print_json_error(text, 2, "error")
        return report_error(text, 2, False)

    if args.command not in QUIET_COMMANDS:  # structlog costs start-up time `envs` need not pay
        configure_logging(log_format, quiet=getattr(args, "quiet", False))
    from orchestrator.running import cancel

    cancel.install()  # SIGTERM/SIGINT stop a run between revisions (exit 143/130)
    json_logs = wants_json(log_format)
    try:
        return COMMANDS[args.command](args, Out(as_json, json_logs))
    except OrchestratorError as exc:
        if as_json:
            print_json_error(exc.message, exc.exit_code, exc.outcome, exc.details.get("results"))
        return report_error(exc.message, exc.exit_code, json_logs)
    except BrokenPipeError:  # before the `except Exception` that would print into the pipe
        return _reader_left()
    except KeyboardInterrupt:
        if as_json:
            print_json_error("interrupted by the user", 130, "interrupted")
        return report_error("interrupted by the user", 130, json_logs)
    except Exception as exc:  # an error we did not foresee: still one paragraph
        if os.environ.get("ORCHESTRATOR_DEBUG"):
            raise
        from orchestrator.core.secrets import redact

        text = redact(f"unexpected error: {type(exc).__name__}: {exc}".splitlines()[0])
        text += " (set ORCHESTRATOR_DEBUG=1 for a traceback)"
        if as_json:
            print_json_error(text, 1, "failed")
        return report_error(text, 1, json_logs)
