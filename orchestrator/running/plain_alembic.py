"""Plain `alembic upgrade/downgrade/stamp` through the project's env.py: the same lock,
ledger rows, policies and audit trail as an orchestrator run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from orchestrator.core.config import Target, load_settings
from orchestrator.core.errors import Cancelled, OrchestratorError, UsageError
from orchestrator.core.planning import refusal_message
from orchestrator.migrations.project_modules import source_only
from orchestrator.running.app import App
from orchestrator.running.policies import (
    check_approval,
    enforce_lint,
    lint_revisions,
    record_waivers,
)
from orchestrator.running.predecessor import expected_reads, judge, upgrade_steps
from orchestrator.running.run import TargetRun


def _plain_env(context: Any) -> tuple[App, Target]:
    settings = load_settings()
    app = App.load(settings, interactive=True)
    name = context.get_x_argument(as_dictionary=True).get("env") or settings.env
    targets = app.targets(app.envs.get(name).name)
    wanted = context.get_x_argument(as_dictionary=True).get("target")
    if wanted:
        targets = [t for t in targets if t.name == wanted]
    if len(targets) != 1:
        raise UsageError(
            f"{name} has {len(targets)} databases: name one with `-x target=NAME`, or use "
            "`orchestrator migrate`, which fans out over all of them."
        )
    return app, targets[0]


def plain_alembic_dialect(context: Any) -> str:
    _, target = _plain_env(context)
    return target.url.split(":", 1)[0].split("+", 1)[0]


def plain_alembic(context: Any, options: dict[str, Any]) -> None:
    """`alembic upgrade/downgrade/...`: same lock, ledger rows and audit trail as our runs.
    Alembic loads the revisions from here on (from their source: see `source_only`)."""
    with source_only():
        _plain_alembic(context, options)


def _plain_alembic(context: Any, options: dict[str, Any]) -> None:
    from alembic.util import CommandError

    from orchestrator.core.logging import configure_logging
    from orchestrator.running import cancel

    cancel.install()
    try:
        app, target = _plain_env(context)
    except OrchestratorError as exc:
        raise CommandError(exc.message) from None
    configure_logging(app.settings.log_format)
    cmd_opts = getattr(context.config, "cmd_opts", None)
    command = (
        cmd_opts.cmd[0].__name__ if cmd_opts is not None and getattr(cmd_opts, "cmd", None) else ""
    )
    run = TargetRun(app, target, f"alembic {command}".strip())

    def execute(connection: Connection, hook: Callable[..., None]) -> None:
        context.configure(connection=connection, on_version_apply=hook, **options)
        with context.begin_transaction():
            context.run_migrations()

    x_args = context.get_x_argument(as_dictionary=True)
    try:
        if command not in ("upgrade", "downgrade", "stamp"):
            with run.engine.connect() as connection:
                execute(connection, lambda **_: None)
                connection.commit()
            return
        revisions: list[str] = []
        destination = ""
        findings: list[Any] = []
        problem: str | None = None
        if command == "upgrade":
            # linted first, as by `orchestrator migrate`: the waivers go on run.started too
            state = run.read()
            destination = app.resolve(context.get_revision_argument() or "head")
            revisions = upgrade_steps(app, state.heads, destination, run.where)
            findings, problem = lint_revisions(app, run.env, revisions)
            record_waivers(run, findings)
        run.start()
        if command == "upgrade":
            steps = judge(app, run.env, revisions)
            if any(s.blocked for s in steps):
                run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
        if command == "stamp":
            revisions = [_check_stamp(app, run, context.get_revision_argument())]
        if command == "downgrade" and not run.env.policy.allow_downgrade:
            run.refuse(
                f"Refused: downgrades are not allowed on {run.env.name}. If you must, use "
                f"`orchestrator downgrade {run.env.name} --to REV --reason TEXT --force`."
            )
        approve = x_args.get("approve") in ("1", "yes", "true")
        check_approval(app, run, approve, revisions, "down" if command == "downgrade" else "up")
        if command == "upgrade":
            enforce_lint(run, findings, problem)
        with run.locked():
            run.close_dead_runs()
            if command == "upgrade":  # judged again: the predecessor may have moved meanwhile
                state = run.read()
                revisions = upgrade_steps(app, state.heads, destination, run.where)
                steps = judge(app, run.env, revisions, fresh=True)
                if any(s.blocked for s in steps):
                    run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
                run.expected_reads = expected_reads(app, run.env, revisions)
                run.audit.emit(
                    "gate.passed", revisions=list(revisions), predecessor=run.env.promotes_from
                )
            run.apply(revisions, command, execute)
            run.finish()
    except Cancelled as exc:
        run.close()
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except OrchestratorError as exc:
        raise CommandError(exc.message) from None
    finally:
        run.close()


def _check_stamp(app: App, run: TargetRun, argument: Any) -> str:
    """A stamp that leaves a revision applied now unapplied is a downgrade: refused where
    downgrades are. Returns the destination, for the messages."""
    refs = argument if isinstance(argument, (list, tuple)) else [argument or "head"]
    destination = {app.resolve(ref) for ref in refs if ref not in ("base", None)}
    reached: set[str] = set().union(*(app.graph.ancestors(d) for d in destination))
    heads = run.read().heads
    backwards = [h for h in heads if h not in reached]
    shown = ", ".join(sorted(destination)) or "base"
    if backwards and not run.env.policy.allow_downgrade:
        run.refuse(
            f"Refused: stamping {run.where} at {shown} marks {', '.join(backwards)} as not "
            f"applied: that is a downgrade, and downgrades are not allowed on {run.env.name}. "
            f"If you must, use `orchestrator downgrade {run.env.name} --to REV --reason TEXT "
            "--force`."
        )
    return shown
