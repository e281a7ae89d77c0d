"""policy.schema_drift: the `schema` value of `status`, `plan`'s preview, and the checks
around a migrate (`check_before_run` under the lock, `check_divergence` after the run)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.live_schema import (
    LiveSchema,
    as_recorded,
    comparable,
    comparable_fingerprints,
    live_fingerprint,
    predecessor_schemas,
    read_live,
    schema_check,
    short_heads,
    where_of,
)
from orchestrator.core.config import Target
from orchestrator.core.errors import OrchestratorError
from orchestrator.db.database import current_heads
from orchestrator.evidence import ledger
from orchestrator.schema.description import Difference, compare, fingerprint, judge
from orchestrator.schema.reader import catalog_stamp, read_schema

if TYPE_CHECKING:
    from orchestrator.running.app import App
    from orchestrator.running.run import TargetRun

MAX_LISTED = 10  # differences named in a refusal; `drift` lists them all


def schema_status(app: App, target: Target, connection: Connection, heads: Sequence[str]) -> str:
    """ok | drifted | diverged | unknown, for `status` (no lock: a quick look)."""
    env = app.envs.get(target.env)
    dialect = connection.dialect.name
    check = schema_check(app, target)
    try:
        recorded = ledger.recorded_schema(connection, heads, False, check)
        live = live_fingerprint(connection, recorded, env.schemas)
        moved = recorded is not None and live != recorded.fingerprint
        if moved and as_recorded(connection, heads, check, env.schemas):
            recorded = replace(recorded, fingerprint=live)  # type: ignore[type-var]
    except SQLAlchemyError:
        return "unknown"
    seen = LiveSchema(where_of(target), tuple(heads), dialect, live, None)
    app.schema_cache.setdefault(f"seen:{env.name}", []).append(seen)  # for its successor
    preds = comparable_fingerprints(app, env, heads, dialect)
    return judge(live, recorded.fingerprint if recorded else None, preds)


# -- around a migrate --------------------------------------------------------------------------


def drift_since_recorded(
    connection: Connection,
    heads: Sequence[str],
    check: ledger.RowCheck | None,
    schemas: Sequence[str] | None = None,
) -> list[Difference] | None:
    """The differences between the live schema and what the last run recorded at `heads`;
    None when nothing was recorded there (no evidence)."""
    recorded = ledger.recorded_schema(connection, heads, False, check)
    if recorded is None:
        return None
    if recorded.stamp and catalog_stamp(connection, schemas) == recorded.stamp:
        return []
    live = read_schema(connection, schemas)
    if fingerprint(live) == recorded.fingerprint:
        return []
    full = ledger.recorded_schema(connection, heads, check=check)
    return compare(full.description or {}, live) if full else None


def planned_schema_drift(
    app: App, target: Target, connection: Connection, heads: Sequence[str]
) -> list[str]:
    """For `plan`: what a migrate's check would name (nothing when the policy is off)."""
    if app.envs.get(target.env).policy.schema_drift == "off":
        return []
    schemas = app.envs.get(target.env).schemas
    try:
        drift = drift_since_recorded(connection, heads, schema_check(app, target), schemas)
        return [d.line for d in drift or []]
    except SQLAlchemyError:
        return []


def check_before_run(run: TargetRun, heads: Sequence[str]) -> None:
    """Under the lock, before applying: policy.schema_drift against the recorded schema."""
    policy = run.env.policy.schema_drift
    if policy == "off":
        return
    with run.reading() as connection:
        check = schema_check(run.app, run.target)
        diffs = drift_since_recorded(connection, heads, check, run.env.schemas)
    if not diffs:
        return
    lines = [d.line for d in diffs]
    run.audit.emit(
        "schema.drifted",
        outcome="refused" if policy == "refuse" else None,
        at_revision=short_heads(heads),
        differences=lines,
        policy=policy,
    )
    if policy == "refuse":
        listed = "; ".join(lines[:MAX_LISTED])
        more = f"; and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
        run.refuse(
            f"Refused: the schema of {run.where} is not what its last run left at "
            f"{short_heads(heads)} (policy.schema_drift: refuse): {listed}{more}. "
            f"`orchestrator drift {run.env.name}` shows each difference with the Alembic "
            "operation that reverts it; revert it, or make the change a revision.",
            schema_drift=lines,
        )


def check_divergence(app: App, run: TargetRun) -> None:
    """After a run: its schema next to the predecessor's at the same revision."""
    if run.env.policy.schema_drift == "off" or run.env.promotes_from is None:
        return
    if run.record_schema() is None:
        return
    try:
        heads = run.schema_heads  # as the record read them, under the same lock
        if heads is None:
            with run.reading() as connection:
                heads = current_heads(connection)
        # read again unless the gate's read of it (the one read of the predecessor) has it
        app.schema_cache.pop(run.env.promotes_from, None)
        preds = comparable(predecessor_schemas(app, run.env), heads, run.engine.dialect.name)
        if not preds or any(p.fingerprint == run.schema_fingerprint for p in preds):
            return
        pred = next(t for t in app.targets(run.env.promotes_from) if where_of(t) == preds[0].where)
        pred_schemas = app.envs.get(run.env.promotes_from).schemas
        reference = read_live(pred, True, schemas=pred_schemas).description or {}
        with run.reading() as connection:
            live = read_schema(connection, run.env.schemas)
    except (OrchestratorError, SQLAlchemyError):
        return  # no evidence either way; status shows `unknown`
    run.audit.emit(
        "schema.diverged",
        at_revision=short_heads(heads),
        predecessor=preds[0].where,
        differences=[d.line for d in compare(reference, live)],
    )
