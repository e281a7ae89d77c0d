"""status, plan, current, history: read-only views of where each environment stands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.live_schema import predecessor_schemas
from orchestrator.commands.schema_drift import planned_schema_drift, schema_status
from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.planning import TargetState, env_py_difference, ledger_heads, plan_verdict
from orchestrator.db.database import keep_reads, safe_url
from orchestrator.evidence import ledger
from orchestrator.migrations.lint.findings import blocking
from orchestrator.running.app import App
from orchestrator.running.liveness import live_run_ids, run_alive
from orchestrator.running.policies import ahead_warnings, lint_for, waiver_lines
from orchestrator.running.predecessor import (
    checksum_drift,
    env_py_note,
    judge,
    looking_at,
    predecessor_states,
    read_connection,
    read_each,
    read_state,
    upgrade_steps,
)


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
            targets = app.environment(env.name).targets
        except UsageError as exc:
            row = _unconfigured(env.name, env.name, str(exc), heads)
            # a variable that is set but holds no usable URL is a database we cannot read
            row["configured"] = bool(env.database.url_env and app.environ.get(env.database.url_env))
            rows.append(row)
            continue
        if len(targets) > 1:  # read once here, not once per thread below
            _read_predecessor(app, env)
        rows += read_each(targets, lambda t: _target_status(app, t, head, heads))
    _env_py(app, rows)
    return rows


def _env_py(app: App, rows: list[dict[str, Any]]) -> None:
    """Each row's `env_py`: whether this checkout's env.py (with the project modules it
    imports) is the one its predecessor's databases last ran with: `same`, `differs` (and
    `env_py_note` says how), or `unknown` (the predecessor is not shown or never recorded it)."""
    mine = app.project.env_py_checksum
    for row in rows:
        env = app.envs.get(row["env"])
        states = [
            TargetState(r["target"], frozenset(), env_py=r.get("last_env_py"))
            for r in rows
            if r["env"] == env.promotes_from and r.get("last_env_py")
        ]
        note = env_py_difference(env.promotes_from, mine, states)
        row["env_py"] = "differs" if note else ("same" if states and mine else "unknown")
        if note:
            row["env_py_note"] = note


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


def _chain_state(app: App, env: EnvironmentConfig, connection: Any) -> str | None:
    """A signing database's evidence, verified: `intact up to entry N`, `nothing recorded
    yet`, or why it cannot be believed (`evidence missing`, `broken at entry N: ...`)."""
    keys = app.environment(env.name).public_keys
    if not keys:
        return None
    from orchestrator.running.predecessor import believed

    problem, _, head, _ = believed(connection, keys, env.name, whole=True)
    if problem is not None:
        return problem
    return f"intact up to entry {head['seq']}" if head else "nothing recorded yet"


def own_chain_problem(app: App, env: EnvironmentConfig, connection: Any) -> str | None:
    """Why a signing database's own evidence cannot be believed (broken, missing, audit
    rows no end entry covers), as its next run would find before writing; None when it can
    (or the environment does not sign)."""
    keys = app.environment(env.name).public_keys
    if not keys:
        return None
    from orchestrator.running.predecessor import believed

    return believed(connection, keys, env.name, whole=True)[0]


def env_chain_advice(env: str) -> str:
    """What to do about one's own broken chain (the words of `migrate`'s refusal)."""
    return (
        f"{env} signs nothing after evidence it cannot prove, so a run would change nothing. "
        f"Find out what happened to its database; `orchestrator keys repair {env} --reason "
        "...` (the key holder) records it and lets runs go on"
    )


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
        with looking_at(app, target, status=True) as connection:
            state = read_state(connection, app.graph, target.name)
            open_runs = ledger.runs_without_end(connection)
            live = live_run_ids(connection) if open_runs else set()
            terminal = ledger.recent_ends(connection)
            schema = schema_status(app, target, connection, state.heads)
            chain_state = _chain_state(app, env, connection)
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
    succeeded = [e for e in terminal if e["event"] == "run.succeeded"]
    row["last_env_py"] = succeeded[-1].get("env_py") if succeeded else None
    running = [r for r in open_runs if run_alive(r, live)]
    if chain_state is not None:
        row["evidence_chain"] = chain_state
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
                # refused, or no lock in time: it never touched the schema
                "untouched": untouched(run),
            }
            if run
            else None
        ),
        in_progress=[
            {k: r.get(k) for k in ("run_id", "actor", "timestamp", "command")} for r in running
        ],
        interrupted=interrupted,
        version_disagrees=_version_disagrees(app, state.heads, state.history),
    )
    return row


def untouched(end: dict[str, Any]) -> str | None:
    """Why a run's end says it never touched the database, or None when it may have."""
    if end.get("event") == "run.refused":
        return "refused"
    if end.get("event") == "run.failed" and end.get("holder"):
        return "lock timeout"
    return None


def health(rows: Sequence[dict[str, Any]], strict: bool) -> int:
    """`status` as a health check: 1 when a database whose variable is set cannot be read
    (and, with `strict`, when an environment's variable is unset), else 0."""
    unreadable = any(r.get("error") and r.get("configured") for r in rows)
    unset = any(not r.get("configured") for r in rows)
    return 1 if unreadable or (strict and unset) else 0


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
    for target in app.environment(env.name).targets:
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, target.name)
            schema = planned_schema_drift(app, target, connection, state.heads)
            own_chain = own_chain_problem(app, env, connection)
        revisions = upgrade_steps(app, state.heads, destination, env.name)
        steps = judge(app, env, revisions)
        env_py = env_py_note(app, env) if revisions else None  # the predecessor read just now
        linted = lint_for(app, env, revisions)
        findings, problem = linted.findings, linted.problem
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
            # what a later environment's lint will refuse, and how to waive it there
            "lint_ahead": ahead_warnings(app, linted),
            "lint_advice": (
                "to waive them on " + env.name + ", " + waiver_lines(app, env, blocking(findings))
                if env.policy.lint == "error" and blocking(findings)
                else None
            ),
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
            "env_py": env_py,
        }
        if own_chain is not None:
            entry["evidence_chain"] = own_chain
        if own_chain is not None and revisions:  # as `migrate` refuses before it writes
            entry.update(
                would_refuse=True,
                blocker="evidence",
                verdict=f"REFUSED: {own_chain}. {env_chain_advice(env.name)}",
            )
        if env_py and env.policy.same_env_py == "refuse" and not entry["would_refuse"]:
            entry.update(
                would_refuse=True,
                blocker="env_py",
                verdict=f"REFUSED (policy.same_env_py: refuse): {env_py}",
            )
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
    for target in app.environment(env_name).targets:
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
