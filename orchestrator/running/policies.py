"""The policies a run enforces before it takes the lock: approval and lint."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from orchestrator.core.config import EnvironmentConfig
from orchestrator.running.app import App
from orchestrator.running.run import TargetRun


def check_approval(
    app: App,
    run: TargetRun,
    approve: bool,
    revisions: Sequence[str] = (),
    direction: str = "up",
    given: str | None = None,
) -> None:
    """Where approval is required: --approve, or the environment's name typed on a terminal
    (after seeing what would run); how it was given goes on the run's events. `given` is an
    approval obtained earlier for the same run (rollout asks for every environment first)."""
    if not run.env.policy.require_approval:
        return
    if approve or given:
        run.audit.common["approval"] = given or "--approve"
        return
    how = ask_approval(app, run.env.name, describe_run(app, run.where, revisions, direction))
    if how == "typed":
        run.audit.common["approval"] = "typed"
        return
    if how is not None:  # the wrong name was typed
        run.refuse(f"Refused: the typed name {how!r} does not match {run.env.name!r}.")
    run.refuse(approval_refusal(run.env.name))


def approval_refusal(env: str) -> str:
    return (
        f"Refused: {env} requires approval (policy.require_approval). Re-run with "
        "--approve (plain alembic: -x approve=yes), or run on a terminal to confirm by typing "
        "the environment's name."
    )


def describe_run(app: App, where: str, revisions: Sequence[str], direction: str = "up") -> str:
    """What a run is about to do, for the approval prompt: one line per revision."""
    if not revisions:
        return f"{where}: nothing to run (already at the target)."
    verb = "apply" if direction == "up" else "revert"
    lines = [f"{where}: about to {verb} {len(revisions)} revision(s):"]
    for rev in revisions:
        doc = app.graph.get(rev).doc if rev in app.graph else ""
        lines.append(f"  {rev}  {doc}".rstrip())
    return "\n".join(lines)


def ask_approval(app: App, env: str, summary: str) -> str | None:
    """On a terminal: show what would run and ask for the environment's name. Returns
    "typed" when it matches, the text typed when it does not, None off a terminal."""
    if not (app.interactive and sys.stdin.isatty()):
        return None
    # the prompt goes to stderr: stdout may be piped into another program
    sys.stderr.write(f"{summary}\n{env} requires approval. Type its name to proceed: ")
    sys.stderr.flush()
    typed = sys.stdin.readline().strip()
    return "typed" if typed == env else typed


def lint_revisions(
    app: App, env: EnvironmentConfig, revisions: Sequence[str]
) -> tuple[list[Any], str | None]:
    """Findings for the revisions about to run, and a note when lint could not run."""
    from orchestrator.migrations import lint

    if env.policy.lint == "off" or not revisions:
        return [], None
    return lint_findings(app, revisions, [*lint.DEFAULT_EXCLUDE, *env.policy.lint_exclude])


def lint_findings(
    app: App, revisions: Sequence[str], exclude: Sequence[str]
) -> tuple[list[Any], str | None]:
    """Each revision rendered offline on its own and linted; one that cannot be rendered is
    an `unlintable` finding of its own (waivable), never an error of the run. The note says
    why squawk itself could not run."""
    from orchestrator.migrations import lint

    rendered = app.project.offline_sql(revisions, "postgresql")
    waivers = {
        rev: lint.parse_waivers(app.graph.get(rev).path.read_text(encoding="utf-8"))
        for rev in revisions
    }
    problem = None
    try:
        findings = lint.lint_revisions(rendered.sql, waivers, exclude=exclude)
    except lint.LintError as exc:
        findings, problem = [], str(exc)
    findings += [lint.unlintable(r, why, waivers[r]) for r, why in rendered.failed.items()]
    order = {rev: i for i, rev in enumerate(revisions)}
    findings.sort(key=lambda f: (order[f.revision], f.line if f.line is not None else -1))
    return findings, problem


def record_waivers(run: TargetRun, findings: Sequence[Any]) -> None:
    """The waivers that silenced a finding, and the findings let through (lint: warn), as
    `revision:rule`, on the run's events from now on."""
    waivers = sorted({f"{f.revision}:{f.rule}" for f in findings if f.waived})
    warnings = sorted({f"{f.revision}:{f.rule}" for f in findings if not f.waived})
    if waivers:
        run.audit.common["waivers"] = waivers
    if warnings:
        run.audit.common["lint_findings"] = warnings


def enforce_lint(run: TargetRun, findings: Sequence[Any], problem: str | None) -> None:
    from orchestrator.migrations.lint import blocking, refusal_message

    mode = run.env.policy.lint
    record_waivers(run, findings)
    bad = blocking(findings)
    for finding in bad:
        run.audit.log.warning(
            "lint.finding",
            revision=finding.revision,
            rule=finding.rule,
            message=finding.message,
            help=finding.help,
        )
    if problem is not None:
        if mode == "error":
            run.refuse(f"Refused: lint is required on {run.env.name} but could not run: {problem}")
        run.audit.log.warning("lint.unavailable", env=run.env.name, error=problem)
        return
    if bad and mode == "error":
        files = {f.revision: run.app.graph.get(f.revision).path.name for f in bad}
        run.refuse(
            refusal_message(run.env.name, bad, files, run.env.promotes_from),
            findings=[f.__dict__ for f in bad],
        )
