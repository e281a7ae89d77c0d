"""status, plan, current, history: read-only views of where each environment stands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.drift import (
    planned_schema_drift,
    predecessor_schemas,
    schema_status,
)
from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.planning import ledger_heads, plan_verdict
from orchestrator.db.database import keep_reads, safe_url
from orchestrator.evidence import ledger
from orchestrator.running.app import App
from orchestrator.running.policies import lint_revisions
from orchestrator.running.predecessor import (
    checksum_drift,
    judge,
    predecessor_states,
    read_connection,
    read_each,
    read_state,
    upgrade_steps,
)
from orchestrator.running.run import live_run_ids, run_alive


def status(app: App, names: list[str]) -> list[dict[str, Any]]:
    with keep_reads():  # one connection per database, whatever reads it (SPEC Part 3)
        return _status(app, names)


def _status(app: App, names: list[str]) -> list[dict[str, Any]]:
    names = names or list(app.envs.order)
    heads = app.graph.heads()
    head = heads[0] if len(heads) == 1 else None
    rows = []
    for name in names:
        env = app.envs.get(name)
        try:
            targets = app.targets(env.name)
        except UsageError as exc:
            rows.append(_unconfigured(env.name, env.name, str(exc), heads))
            continue
        if len(targets) > 1:  # read once here, not once per thread below
            _read_predecessor(app, env)
        rows += read_each(targets, lambda t: _target_status(app, t, head, heads))
    return rows


def _read_predecessor(app: App, env: EnvironmentConfig) -> None:
    """What every database's row compares with: its predecessor's ledgers and schemas."""
    try:
        predecessor_states(app, env)
        predecessor_schemas(app, env)
    except OrchestratorError:
        pass  # each row says why its gate or schema could not be judged


def evidence_kind(env: EnvironmentConfig) -> str:
    """`signed` where the environment signs its ledger and audit trail, else `unsigned`
    (evidence that anyone who can write its database can forge)."""
    return "signed" if env.signing is not None else "unsigned"


def _unconfigured(env: str, target: str, why: str, heads: tuple[str, ...]) -> dict[str, Any]:
    return {
        "env": env,
        "target": target,
        "configured": False,
        "error": why,
        "current": [],
        "head": list(heads),
        "pending": [],
        "blocked": [],
        "drift": [],
        "schema": "unknown",
        "last_run": None,
        "interrupted": [],
        "version_disagrees": None,
    }


def _target_status(
    app: App, target: Target, head: str | None, heads: tuple[str, ...]
) -> dict[str, Any]:
    env = app.envs.get(target.env)
    row: dict[str, Any] = {
        "env": env.name,
        "target": target.name,
        "configured": True,
        "database": safe_url(target.url),
        "head": list(heads),
        "evidence": evidence_kind(env),
    }
    try:
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, target.name)
            open_runs = ledger.runs_without_end(connection)
            live = live_run_ids(connection) if open_runs else set()
            terminal = ledger.recent_ends(connection)
            schema = schema_status(app, target, connection, state.heads)
    except (OrchestratorError, SQLAlchemyError) as exc:
        row.update(_unconfigured(env.name, target.name, getattr(exc, "message", str(exc)), heads))
        row["configured"] = True
        return row
    pending = upgrade_steps(app, state.heads, head, env.name) if head else []
    try:
        steps = judge(app, env, pending) if pending else []
    except OrchestratorError as exc:  # the predecessor is unconfigured or unreachable
        steps, row["gate"] = [], f"not judged: {exc.message}"
    last_success = max((e["id"] for e in terminal if e["event"] == "run.succeeded"), default=0)
    interrupted = sorted(
        {r["run_id"] for r in open_runs if not run_alive(r, live)}
        | {
            e["run_id"]
            for e in terminal
            # recorded on behalf of a dead run (`noticed_by`); a run that stopped on a signal
            # recorded its own end and is not dead
            if e["event"] == "run.interrupted" and e.get("noticed_by") and e["id"] > last_success
        }
    )
    run = terminal[-1] if terminal else None
    row.update(
        current=list(state.heads),
        pending=pending,
        blocked=[{"revision": s.revision, "reason": s.reason} for s in steps if s.blocked],
        drift=checksum_drift(app, state),
        schema=schema,
        last_run=(
            {
                "run_id": run["run_id"],
                "actor": run["actor"],
                "timestamp": run["timestamp"],
                "outcome": run.get("outcome"),
                "command": run.get("command"),
            }
            if run
            else None
        ),
        interrupted=interrupted,
        version_disagrees=_version_disagrees(app, state.heads, state.history),
    )
    return row


def _version_disagrees(
    app: App, heads: tuple[str, ...], history: Sequence[tuple[str, str, str]]
) -> dict[str, list[str]] | None:
    """alembic_version and the ledger's account of it, when they differ (someone stamped or
    edited the version table outside the orchestrator)."""
    graph = app.graph

    def parents(rev: str) -> tuple[str, ...]:
        return graph.get(rev).down_revisions if rev in graph else ()

    def ancestors(rev: str) -> set[str]:
        return graph.ancestors(rev) if rev in graph else {rev}

    said = ledger_heads(history, parents, ancestors)
    if said is None or said == set(heads):
        return None
    return {"alembic_version": sorted(heads), "ledger": sorted(said)}


def plan(app: App, env_name: str, to: str | None, sql: bool) -> list[dict[str, Any]]:
    env = app.envs.get(env_name)
    destination = app.resolve(to or "head")
    plans = []
    for target in app.targets(env.name):
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, target.name)
            schema = planned_schema_drift(app, target, connection, state.heads)
        revisions = upgrade_steps(app, state.heads, destination, env.name)
        steps = judge(app, env, revisions)
        findings, problem = lint_revisions(app, env, revisions)
        drifted = checksum_drift(app, state)
        where = env.name if target.name == env.name else f"{env.name}/{target.name}"
        verdict = plan_verdict(
            where,
            env.promotes_from,
            revisions,
            steps,
            drifted,
            lint_mode=env.policy.lint,
            lint_findings=findings,
            lint_problem=problem,
            requires_approval=env.policy.require_approval,
            schema_drift=schema if env.policy.schema_drift == "refuse" else [],
        )
        entry: dict[str, Any] = {
            "env": env.name,
            "target": target.name,
            "from": list(state.heads),
            "to": destination,
            "steps": [
                {
                    "revision": s.revision,
                    "verdict": verdict.step_verdicts[s.revision][0],
                    "reason": verdict.step_verdicts[s.revision][1],
                    "doc": app.graph.get(s.revision).doc,
                }
                for s in steps
            ],
            "lint": [f.__dict__ for f in findings],
            "lint_problem": problem,
            "drift": drifted,
            "schema_drift": schema,
            "requires_approval": env.policy.require_approval,
            "predecessor": env.promotes_from,
            "predecessor_evidence": (
                evidence_kind(app.envs.get(env.promotes_from)) if env.promotes_from else None
            ),
            "would_refuse": verdict.blocker in ("drift", "schema", "gate", "lint"),
            "blocker": verdict.blocker,
            "verdict": verdict.text,
        }
        if sql:
            dialect = "postgresql" if target.url.startswith("postgres") else "sqlite"
            rendered = app.project.offline_sql(revisions, dialect)
            entry["sql"] = {
                rev: rendered.sql.get(rev)
                or f"-- cannot be rendered offline: {rendered.failed.get(rev)}"
                for rev in revisions
            }
        plans.append(entry)
    return plans


def current(app: App, env_name: str) -> list[dict[str, Any]]:
    rows = []
    for target in app.targets(app.envs.get(env_name).name):
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, target.name)
        rows.append({"env": env_name, "target": target.name, "current": list(state.heads)})
    return rows


def history(app: App) -> list[dict[str, Any]]:
    graph = app.graph
    heads = set(graph.heads())
    ordered = sorted(graph, key=lambda r: len(graph.ancestors(r.revision)), reverse=True)
    return [
        {
            "revision": r.revision,
            "down_revisions": list(r.down_revisions),
            "doc": r.doc,
            "head": r.revision in heads,
            "file": r.path.name,
        }
        for r in ordered
    ]
