"""Schema drift: is the live schema what the migrations made?

- `drift ENV [--against models|PRED]`: what differs, one line per object, with the Alembic
  operation that brings it back where Alembic can render one;
- `schema_status`: the `schema` value of `status` (ok, drifted, diverged, unknown);
- `check_before_run` / `check_divergence`: policy.schema_drift around a migrate.

Reads that judge drift wait for the migration lock, so a run in flight is never reported as
drift. The judgements themselves are pure (orchestrator.schema.description).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core import trust
from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import MigrationFailed, OrchestratorError, UsageError
from orchestrator.db.database import (
    current_heads,
    describe_error,
    make_engine,
    read_only,
    safe_url,
)
from orchestrator.evidence import ledger
from orchestrator.schema.description import (
    Description,
    Difference,
    compare,
    fingerprint,
    judge,
    not_recorded,
)
from orchestrator.schema.reader import catalog_stamp, read_schema

if TYPE_CHECKING:
    from orchestrator.running.app import App
    from orchestrator.running.run import TargetRun

MAX_LISTED = 10  # differences named in a refusal; `drift` lists them all


def _short(heads: Sequence[str]) -> str:
    return ",".join(heads) or "base"


def _where(target: Target) -> str:
    return target.env if target.name == target.env else f"{target.env}/{target.name}"


# -- predecessors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveSchema:
    where: str
    heads: tuple[str, ...]
    dialect: str
    fingerprint: str
    description: Description | None = field(compare=False)  # None: not asked for


def live_fingerprint(
    connection: Connection,
    recorded: ledger.RecordedSchema | None,
    schemas: Sequence[str] | None = None,
) -> str:
    """The live schema's fingerprint; without reflecting the catalog when its stamp is the
    one recorded with `recorded` (then the schema is the recorded one)."""
    stamp = recorded.stamp if recorded is not None else None
    if recorded is not None and stamp and catalog_stamp(connection, schemas) == stamp:
        return recorded.fingerprint
    return fingerprint(read_schema(connection, schemas))


def _as_recorded(
    connection: Connection,
    heads: Sequence[str],
    check: ledger.RowCheck | None,
    schemas: Sequence[str] | None,
) -> bool:
    """Whether a live schema whose fingerprint is not the recorded one is still all the
    record describes: a record of an earlier release (or of fewer `schemas:`) describes less,
    and what it does not describe is not recorded, not drift."""
    full = ledger.recorded_schema(connection, heads, check=check)
    if full is None or full.description is None:
        return False
    live = read_schema(connection, schemas)
    return bool(not_recorded(full.description, live)) and not compare(full.description, live)


def schema_check(app: App, target: Target) -> ledger.RowCheck | None:
    """Where `target`'s environment signs, a recorded schema counts only when its signature
    verifies (the deploy role can rewrite the table, not sign)."""
    keys = app.public_keys(target.env)
    if keys is None:
        return None
    return partial(trust.schema_row_problem, keys=keys, env=target.env, target=target.name)


def read_live(
    target: Target,
    with_description: bool = False,
    check: ledger.RowCheck | None = None,
    schemas: Sequence[str] | None = None,
) -> LiveSchema:
    try:  # the shared reader: a run that read this database already kept its connection
        with read_only(target.url, "orchestrator drift") as connection:
            connection.execution_options(read_only=True)
            dialect = connection.dialect.name
            heads = current_heads(connection)
            description = None
            if with_description:
                description = read_schema(connection, schemas)
                digest = fingerprint(description)
            else:
                recorded = ledger.recorded_schema(connection, heads, False, check)
                digest = live_fingerprint(connection, recorded, schemas)
    except SQLAlchemyError as exc:
        raise MigrationFailed(
            f"Cannot read the schema of {_where(target)} ({safe_url(target.url)}): "
            f"{describe_error(exc)}"
        ) from None
    return LiveSchema(_where(target), heads, dialect, digest, description)


def predecessor_schemas(app: App, env: EnvironmentConfig) -> list[LiveSchema]:
    """The live schemas of the predecessor's databases (read once per process, per env;
    `status` has read them already when it showed the predecessor first, the gate's read
    of the predecessor where it found each as its last run recorded it)."""
    if env.promotes_from is None:
        return []
    cache = app.schema_cache
    if env.promotes_from not in cache:
        targets = app.targets(env.promotes_from)
        seen = {s.where: s for s in cache.get(f"seen:{env.promotes_from}", [])}
        gated = {s.name: s.schema for s in app.predecessor_cache.get(env.promotes_from, [])}
        schemas = app.envs.get(env.promotes_from).schemas

        def live(target: Target) -> LiveSchema:
            found, schema = seen.get(_where(target)), gated.get(target.name)
            if found is None and schema is not None:
                heads, dialect, digest = schema
                found = LiveSchema(_where(target), heads, dialect, digest, None)
            return found or read_live(target, check=schema_check(app, target), schemas=schemas)

        cache[env.promotes_from] = [live(t) for t in targets]
    return cache[env.promotes_from]


def comparable(preds: Sequence[LiveSchema], heads: Sequence[str], dialect: str) -> list[LiveSchema]:
    """Predecessors at the same revision, on the same kind of database."""
    return [p for p in preds if p.heads == tuple(heads) and p.dialect == dialect]


def _comparable_fingerprints(
    app: App, env: EnvironmentConfig, heads: Sequence[str], dialect: str
) -> list[str]:
    if not heads:
        return []
    try:
        preds = predecessor_schemas(app, env)
    except OrchestratorError:  # unconfigured or unreachable: no evidence either way
        return []
    return [p.fingerprint for p in comparable(preds, heads, dialect)]


# -- status ------------------------------------------------------------------------------------


def schema_status(app: App, target: Target, connection: Connection, heads: Sequence[str]) -> str:
    """ok | drifted | diverged | unknown, for `status` (no lock: a quick look)."""
    env = app.envs.get(target.env)
    dialect = connection.dialect.name
    check = schema_check(app, target)
    try:
        recorded = ledger.recorded_schema(connection, heads, False, check)
        live = live_fingerprint(connection, recorded, env.schemas)
        moved = recorded is not None and live != recorded.fingerprint
        if moved and _as_recorded(connection, heads, check, env.schemas):
            recorded = replace(recorded, fingerprint=live)  # type: ignore[type-var]
    except SQLAlchemyError:
        return "unknown"
    seen = LiveSchema(_where(target), tuple(heads), dialect, live, None)
    app.schema_cache.setdefault(f"seen:{env.name}", []).append(seen)  # for its successor
    preds = _comparable_fingerprints(app, env, heads, dialect)
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
        at_revision=_short(heads),
        differences=lines,
        policy=policy,
    )
    if policy == "refuse":
        listed = "; ".join(lines[:MAX_LISTED])
        more = f"; and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
        run.refuse(
            f"Refused: the schema of {run.where} is not what its last run left at "
            f"{_short(heads)} (policy.schema_drift: refuse): {listed}{more}. "
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
        with run.reading() as connection:
            heads = current_heads(connection)
        # read again unless the gate's read of it (the one read of the predecessor) has it
        app.schema_cache.pop(run.env.promotes_from, None)
        preds = comparable(predecessor_schemas(app, run.env), heads, run.engine.dialect.name)
        if not preds or any(p.fingerprint == run.schema_fingerprint for p in preds):
            return
        pred = next(t for t in app.targets(run.env.promotes_from) if _where(t) == preds[0].where)
        pred_schemas = app.envs.get(run.env.promotes_from).schemas
        reference = read_live(pred, True, schemas=pred_schemas).description or {}
        with run.reading() as connection:
            live = read_schema(connection, run.env.schemas)
    except (OrchestratorError, SQLAlchemyError):
        return  # no evidence either way; status shows `unknown`
    run.audit.emit(
        "schema.diverged",
        at_revision=_short(heads),
        predecessor=preds[0].where,
        differences=[d.line for d in compare(reference, live)],
    )


# -- the drift command -------------------------------------------------------------------------


@contextmanager
def _locked(app: App, target: Target, engine: Any) -> Iterator[None]:
    """The migration lock while we read, so that a run in flight is not taken for drift."""
    import structlog

    from orchestrator.db.locks import DEFAULT_KEY, migration_lock

    env = app.envs.get(target.env)
    key = env.lock.key or DEFAULT_KEY

    def on_wait(holder: dict[str, Any]) -> None:
        structlog.get_logger("orchestrator").info(
            "lock.waiting", env=env.name, target=target.name, holder=holder
        )

    with migration_lock(engine, key, env.lock.timeout, on_wait, f"orchestrator drift {env.name}"):
        yield


def drift(app: App, env_name: str, against: str | None) -> list[dict[str, Any]]:
    env = app.envs.get(env_name)
    if against is not None and against != "models":
        app.envs.get(against)  # an unknown name is a usage error, named
    reports = []
    for target in app.targets(env.name):
        reports.append(_drift_target(app, env, target, against))
    return reports


def _drift_target(
    app: App, env: EnvironmentConfig, target: Target, against: str | None
) -> dict[str, Any]:
    from orchestrator.schema.ops import repair

    engine = make_engine(target.url, f"orchestrator drift {env.name}", writer=False)
    where = _where(target)
    try:
        with _locked(app, target, engine), engine.connect() as connection:
            connection.execution_options(read_only=True)
            heads = current_heads(connection)
            if against == "models":
                return _against_models(app, where, heads, connection)
            live = read_schema(connection, env.schemas)
            if against is None:
                check = schema_check(app, target)
                recorded = ledger.recorded_schema(connection, heads, check=check)
                if recorded is None or recorded.description is None:
                    signed = " whose signature verifies" if check else ""
                    raise UsageError(
                        f"No schema{signed} was recorded for {where} at {_short(heads)}: no run "
                        "of this version has left it there, so there is nothing to compare with. "
                        f"Compare with the models (`orchestrator drift {env.name} --against "
                        "models`) or with the predecessor (`--against ENV`)."
                    )
                reference = recorded.description
                what = f"what run {recorded.run_id} recorded at {_short(heads)} ({recorded.at})"
            else:
                pred = _predecessor_at(app, against, heads, connection.dialect.name, where)
                reference = pred.description or {}
                what = f"{pred.where}, also at {_short(heads)}"
    except SQLAlchemyError as exc:
        raise MigrationFailed(
            f"Cannot read the schema of {where} ({safe_url(target.url)}): {describe_error(exc)}"
        ) from None
    finally:
        engine.dispose()
    diffs = compare(reference, live)
    return {
        "env": env.name,
        "target": target.name,
        "at": list(heads),
        "against": against or "recorded",
        "reference": what,
        "fingerprint": fingerprint(live),
        "differences": [{**d.as_dict(), "op": repair(d, reference, live)} for d in diffs],
        "not_recorded": not_recorded(reference, live),
    }


def _predecessor_at(
    app: App, name: str, heads: Sequence[str], dialect: str, where: str
) -> LiveSchema:
    schemas = app.envs.get(name).schemas
    preds = [read_live(t, with_description=True, schemas=schemas) for t in app.targets(name)]
    same = comparable(preds, heads, dialect)
    if same:
        return same[0]
    if any(p.heads == tuple(heads) for p in preds):
        raise UsageError(
            f"{name} runs on another kind of database than {where} ({dialect}): their schemas "
            "cannot be compared object by object."
        )
    theirs = ", ".join(f"{p.where} at {_short(p.heads)}" for p in preds)
    raise UsageError(
        f"{where} is at {_short(heads)} but {theirs}: schemas are compared only at the same "
        f"revision. Promote first, or compare with the recorded schema (`drift` without "
        "--against)."
    )


def _against_models(
    app: App, where: str, heads: Sequence[str], connection: Connection
) -> dict[str, Any]:
    from orchestrator.core.logging import quiet_alembic
    from orchestrator.schema.against_models import model_differences

    with quiet_alembic():
        diffs = model_differences(app.project, connection)
    env, _, target = where.partition("/")
    return {
        "env": env,
        "target": target or env,
        "at": list(heads),
        "against": "models",
        "reference": "the models (env.py's target_metadata), by Alembic's autogenerate",
        "fingerprint": fingerprint(read_schema(connection, app.envs.get(env).schemas)),
        "differences": diffs,
    }
