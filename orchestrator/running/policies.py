"""The policies a run enforces before it takes the lock: approval and lint."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
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


@dataclass
class LintResult:
    """An environment's lint verdict on the revisions about to run, and what the later
    environments of its chain (lint: error) will refuse: said now, before they get there."""

    findings: list[Any] = field(default_factory=list)
    problem: str | None = None  # why squawk itself could not run
    ahead: dict[str, list[Any]] = field(default_factory=dict)  # later env -> its refusals


def env_file(app: App, env: EnvironmentConfig) -> str:
    """The environment's file as the user would name it (relative to the project)."""
    path = Path(env.source)
    try:
        return str(path.resolve().relative_to(app.settings.project_dir.resolve()))
    except ValueError:
        return str(path)


def later_strict(app: App, env: EnvironmentConfig) -> list[EnvironmentConfig]:
    """The environments that promote (directly or not) from `env` and refuse on lint."""
    return [
        app.envs.get(name)
        for name in app.envs.order
        if name != env.name
        and app.envs.get(name).policy.lint == "error"
        and env.name in app.envs.path_to(name)
    ]


def lint_for(app: App, env: EnvironmentConfig, revisions: Sequence[str]) -> LintResult:
    """Rendered and linted once; judged under `env`'s policy and each later strict one's."""
    later = later_strict(app, env)
    if not revisions or (env.policy.lint == "off" and not later):
        return LintResult()
    raw, problem = lint_findings(app, revisions, ())
    result = LintResult(problem=problem)
    if env.policy.lint != "off":
        result.findings = under_policy(app, env, raw)
    for strict in later:
        refused = [f for f in under_policy(app, strict, raw) if not f.waived]
        if refused:
            result.ahead[strict.name] = refused
    return result


def under_policy(app: App, env: EnvironmentConfig, raw: Sequence[Any]) -> list[Any]:
    """The findings `env` reports: its excluded rules dropped, its waivers (in the revision
    files and in its `lint_waivers`) marked."""
    from orchestrator.migrations import lint

    excluded = lint.expand_aliases([*lint.DEFAULT_EXCLUDE, *env.policy.lint_exclude])
    waived = {rev: lint.expand_aliases(rules) for rev, rules in env.policy.lint_waivers.items()}
    return [
        replace(f, waived=f.waived or f.rule in waived.get(f.revision, ()))
        for f in raw
        if f.rule not in excluded
    ]


def lint_revisions(
    app: App, env: EnvironmentConfig, revisions: Sequence[str]
) -> tuple[list[Any], str | None]:
    """Findings for the revisions about to run, and a note when lint could not run."""
    result = lint_for(app, env, revisions)
    return result.findings, result.problem


def lint_findings(
    app: App, revisions: Sequence[str], exclude: Sequence[str]
) -> tuple[list[Any], str | None]:
    """Each revision rendered offline on its own and linted; one that cannot be rendered is
    an `unlintable` finding of its own (waivable), never an error of the run. The note says
    why squawk itself could not run. Waivers: those in the revision files."""
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
    if lint.UNLINTABLE in lint.expand_aliases(exclude):
        findings = [f for f in findings if f.rule != lint.UNLINTABLE]
    order = {rev: i for i, rev in enumerate(revisions)}
    findings.sort(key=lambda f: (order[f.revision], f.line if f.line is not None else -1))
    return findings, problem


def record_waivers(run: TargetRun, findings: Sequence[Any]) -> None:
    """The waivers that silenced a finding (in the revision file or the environment's
    `lint_waivers`), and the findings let through (lint: warn), as `revision:rule`, on the
    run's events from now on."""
    waivers = sorted({f"{f.revision}:{f.rule}" for f in findings if f.waived})
    warnings = sorted({f"{f.revision}:{f.rule}" for f in findings if not f.waived})
    if waivers:
        run.audit.common["waivers"] = waivers
    if warnings:
        run.audit.common["lint_findings"] = warnings


def lint_refusal(app: App, env: EnvironmentConfig, bad: Sequence[Any]) -> str:
    """The refusal of `env`'s lint: the findings and the exact lines that waive them."""
    from orchestrator.migrations.lint import refusal_message

    files = {f.revision: app.graph.get(f.revision).path.name for f in bad}
    return refusal_message(
        env.name, bad, files, env_file(app, env), bool(env.policy.lint_waivers), env.promotes_from
    )


def waiver_lines(app: App, env: EnvironmentConfig, bad: Sequence[Any]) -> str:
    """Where to add what in `env`'s file to waive `bad` there (the refusal says the same)."""
    from orchestrator.migrations.lint import rules_by_revision, waiver_advice

    rules = rules_by_revision(bad)
    return waiver_advice(env_file(app, env), rules, bool(env.policy.lint_waivers))


def ahead_warnings(app: App, result: LintResult) -> list[str]:
    """One warning per later environment whose lint will refuse these revisions."""
    from orchestrator.migrations.lint import ahead_warning

    return [
        ahead_warning(
            name,
            bad,
            env_file(app, app.envs.get(name)),
            bool(app.envs.get(name).policy.lint_waivers),
        )
        for name, bad in result.ahead.items()
    ]


def enforce_lint(run: TargetRun, result: LintResult) -> None:
    from orchestrator.migrations.lint import blocking

    mode = run.env.policy.lint
    record_waivers(run, result.findings)
    bad = blocking(result.findings)
    for finding in bad:
        run.audit.log.warning(
            "lint.finding",
            env=run.env.name,
            revision=finding.revision,
            rule=finding.rule,
            message=finding.message,
            help=finding.help,
        )
    for (name, refused), text in zip(
        result.ahead.items(), ahead_warnings(run.app, result), strict=True
    ):
        if name != run.env.name:
            run.audit.log.warning(
                "lint.refused_later",
                env=run.env.name,
                refused_on=name,
                findings=[f"{f.revision}:{f.rule}" for f in refused],
                message=text,
            )
    if result.problem is not None:
        if mode == "error":
            run.refuse(
                f"Refused: lint is required on {run.env.name} but could not run: {result.problem}"
            )
        run.audit.log.warning("lint.unavailable", env=run.env.name, error=result.problem)
        return
    if bad and mode == "error":
        run.refuse(
            lint_refusal(run.app, run.env, bad),
            findings=[f.__dict__ for f in bad],
        )
