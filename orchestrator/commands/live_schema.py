"""The live schema of a database, and of its predecessor's databases, read to judge drift.

The judgements themselves are pure (orchestrator.schema.description); `schema_drift` applies
policy.schema_drift with them, `drift` shows the differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core import trust
from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import MigrationFailed, OrchestratorError
from orchestrator.db.database import current_heads, describe_error, read_only, safe_url
from orchestrator.evidence import ledger
from orchestrator.schema.description import Description, compare, fingerprint, not_recorded
from orchestrator.schema.reader import catalog_stamp, read_schema

if TYPE_CHECKING:
    from orchestrator.running.app import App


def short_heads(heads: Sequence[str]) -> str:
    """Revisions as messages show them: comma-separated, `base` for none."""
    return ",".join(heads) or "base"


def where_of(target: Target) -> str:
    """`env`, or `env/target` for one database of a fleet."""
    return target.env if target.name == target.env else f"{target.env}/{target.name}"


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


def as_recorded(
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
            f"Cannot read the schema of {where_of(target)} ({safe_url(target.url)}): "
            f"{describe_error(exc)}"
        ) from None
    return LiveSchema(where_of(target), heads, dialect, digest, description)


def predecessor_schemas(app: App, env: EnvironmentConfig) -> list[LiveSchema]:
    """The live schemas of the predecessor's databases (read once per process, per env;
    `status` has read them already when it showed the predecessor first, the gate's read
    of the predecessor where it found each as its last run recorded it)."""
    if env.promotes_from is None:
        return []
    cache = app.schema_cache
    if env.promotes_from not in cache:
        predecessor = app.environment(env.promotes_from)
        seen = {s.where: s for s in cache.get(f"seen:{env.promotes_from}", [])}
        gated = {s.name: s.schema for s in app.predecessor_cache.get(env.promotes_from, [])}
        schemas = predecessor.config.schemas

        def live(target: Target) -> LiveSchema:
            found, schema = seen.get(where_of(target)), gated.get(target.name)
            if found is None and schema is not None:
                heads, dialect, digest = schema
                found = LiveSchema(where_of(target), heads, dialect, digest, None)
            return found or read_live(target, check=schema_check(app, target), schemas=schemas)

        cache[env.promotes_from] = [live(t) for t in predecessor.targets]
    return cache[env.promotes_from]


def comparable(preds: Sequence[LiveSchema], heads: Sequence[str], dialect: str) -> list[LiveSchema]:
    """Predecessors at the same revision, on the same kind of database."""
    return [p for p in preds if p.heads == tuple(heads) and p.dialect == dialect]


def comparable_fingerprints(
    app: App, env: EnvironmentConfig, heads: Sequence[str], dialect: str
) -> list[str]:
    if not heads:
        return []
    try:
        preds = predecessor_schemas(app, env)
    except OrchestratorError:  # unconfigured or unreachable: no evidence either way
        return []
    return [p.fingerprint for p in comparable(preds, heads, dialect)]
