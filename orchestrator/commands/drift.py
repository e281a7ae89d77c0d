"""`drift ENV [--against models|PRED]`: is the live schema what the migrations made?

What differs, one line per object, with the Alembic operation that brings it back where
Alembic can render one. Reads wait for the migration lock, so a run in flight is never
reported as drift.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.live_schema import (
    LiveSchema,
    comparable,
    read_live,
    schema_check,
    short_heads,
    where_of,
)
from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import MigrationFailed, UsageError
from orchestrator.db.database import current_heads, describe_error, make_engine, safe_url
from orchestrator.evidence import ledger
from orchestrator.schema.description import compare, fingerprint, not_recorded
from orchestrator.schema.reader import read_schema

if TYPE_CHECKING:
    from orchestrator.running.app import App


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
    where = where_of(target)
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
                        f"No schema{signed} was recorded for {where} at {short_heads(heads)}: "
                        "no run of this version has left it there, so there is nothing to "
                        "compare with. "
                        f"Compare with the models (`orchestrator drift {env.name} --against "
                        "models`) or with the predecessor (`--against ENV`)."
                    )
                reference = recorded.description
                what = (
                    f"what run {recorded.run_id} recorded at {short_heads(heads)} ({recorded.at})"
                )
            else:
                pred = _predecessor_at(app, against, heads, connection.dialect.name, where)
                reference = pred.description or {}
                what = f"{pred.where}, also at {short_heads(heads)}"
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
    theirs = ", ".join(f"{p.where} at {short_heads(p.heads)}" for p in preds)
    raise UsageError(
        f"{where} is at {short_heads(heads)} but {theirs}: schemas are compared only at the same "
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
