"""Plain `alembic upgrade/downgrade/stamp` through the project's env.py: the same lock,
ledger rows, policies and audit trail as an orchestrator run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from orchestrator.core.config import Target, load_settings
from orchestrator.core.errors import Cancelled, OrchestratorError, UsageError
from orchestrator.core.planning import refusal_message
from orchestrator.evidence.plans import Plan
from orchestrator.migrations.project_modules import source_only
from orchestrator.running.app import App
from orchestrator.running.plan_gate import (
    check_against_plan,
    plan_approvals,
    read_plan,
    refuse_plan,
)
from orchestrator.running.policies import (
    LintResult,
    check_approval,
    enforce_lint,
    lint_for,
    record_waivers,
)
from orchestrator.running.predecessor import expected_reads, judge, upgrade_steps
from orchestrator.running.run import TargetRun


def _plain_env(context: Any) -> tuple[App, Target]:
    settings = load_settings()
    app = App.load(settings, interactive=True)
    name = context.get_x_argument(as_dictionary=True).get("env") or settings.env
    targets = app.environment(name).targets
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
        linted = LintResult()
        plan = _plan(app, run, x_args.get("plan")) if command == "upgrade" else None
        evidence = None
        if command == "upgrade":
            # linted first, as by `orchestrator migrate`: the waivers go on run.started too
            state = run.read()
            argument = context.get_revision_argument() or "head"
            destination = plan.to if plan is not None else app.resolve(argument)
            revisions = upgrade_steps(app, state.heads, destination, run.where)
            if not revisions:
                return  # nothing to do: no run, no refusal (as `orchestrator migrate`)
            linted = lint_for(app, run.env, revisions)
            record_waivers(run, linted.findings)
        run.start()
        if command == "upgrade":
            _require_plan(run, plan)
            if plan is not None:
                evidence = check_against_plan(app, run, plan, state.heads, revisions)
            steps = judge(app, run.env, revisions, evidence=evidence, own=run.reading)
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
            enforce_lint(run, linted)
        with run.locked():
            run.close_dead_runs()
            if command == "upgrade":  # judged again: the predecessor may have moved meanwhile
                state = run.read()
                revisions = upgrade_steps(app, state.heads, destination, run.where)
                if plan is not None and revisions:
                    evidence = check_against_plan(
                        app, run, plan, state.heads, revisions, render=False
                    )
                steps = judge(
                    app, run.env, revisions, fresh=True, evidence=evidence, own=run.reading
                )
                if any(s.blocked for s in steps):
                    run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
                run.witness(app.predecessor_cache.get(run.env.promotes_from or "", []))
                run.expected_reads = expected_reads(app, run.env, revisions, evidence)
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


def _plan(app: App, run: TargetRun, path: str | None) -> Plan | None:
    """`-x plan=FILE`: the reviewed plan this upgrade runs, checked as a whole (environment,
    expiry, the writer's and the approvers' signatures) before anything is recorded."""
    if not path:
        return None
    plan = read_plan(Path(path))
    refuse_plan(app, plan, run.env.name)
    run.audit.common["plan_sha256"] = plan.sha256
    run.audit.common["plan_approvals"] = plan_approvals(app, plan, run.env.name) or None
    return plan


def _require_plan(run: TargetRun, plan: Plan | None) -> None:
    if plan is None and run.env.policy.require_plan:
        run.refuse(
            f"Refused: {run.env.name} runs only reviewed plans (policy.require_plan): run "
            f"`alembic -x env={run.env.name} -x plan=FILE upgrade head` with a plan made by "
            f"`orchestrator plan {run.env.name} --out FILE` (and approved where "
            "policy.plan_approvers lists keys)."
        )


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
