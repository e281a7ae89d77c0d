"""What a database has run (heads, ledger), what its predecessor has run, and the gate's
judgement of revisions against that evidence."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import MigrationFailed, UsageError
from orchestrator.core.planning import LedgerEntry, Step, TargetState, drift, gate
from orchestrator.db.database import (
    VERSION_TABLE,
    current_heads,
    describe_error,
    read_at_once,
    read_only,
    safe_url,
)
from orchestrator.evidence import ledger
from orchestrator.migrations.revisions import RevisionGraph, RevisionsError
from orchestrator.running.app import App, revision_error


@dataclass(frozen=True)
class DbState:
    heads: tuple[str, ...]
    ledger: Mapping[str, LedgerEntry]
    applied: frozenset[str]
    history: tuple[tuple[str, str, str], ...]  # every ledger row: (revision, direction, run_id)


def read_state(connection: Connection, graph: RevisionGraph, where: str) -> DbState:
    # one round trip where the tables are there (the usual case), three where they may not be
    found = read_at_once(
        connection,
        [
            f"SELECT version_num FROM {VERSION_TABLE}",
            f"SELECT * FROM {ledger.LEDGER_TABLE} ORDER BY id",
        ],
        [VERSION_TABLE, ledger.LEDGER_TABLE],
    )
    if found is not None:
        versions, rows = found
        heads = tuple(sorted(row["version_num"] for row in versions))
    else:
        heads = current_heads(connection)
        rows = ledger.ledger_table_rows(connection)
    unknown = [h for h in heads if h not in graph]
    if unknown:
        raise UsageError(
            f"{where} is at revision {', '.join(unknown)}, which this project's history does "
            "not contain. Check out the code that database was migrated with."
        )
    applied: set[str] = set()
    for head in heads:
        applied |= graph.ancestors(head)
    # one read of the ledger serves both
    return DbState(heads, ledger.latest_of(rows), frozenset(applied), ledger.history_of(rows))


T = TypeVar("T")
READERS = 8  # threads reading a fleet's databases at once, each on its own connection


def read_each(targets: Sequence[Target], read: Callable[[Target], T]) -> list[T]:
    """`read(target)` for each target, in order; a fleet's in threads, which wait on the
    network and the server together (500 databases in seconds, not minutes)."""
    if len(targets) < 2:
        return [read(t) for t in targets]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(READERS, len(targets))) as pool:
        return list(pool.map(read, targets))


@contextmanager
def read_connection(target: Target) -> Iterator[Connection]:
    """A read-only look at one database; failures become one clear error."""
    try:
        with read_only(target.url, "orchestrator status") as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise MigrationFailed(
            f"Cannot read {target.env} ({safe_url(target.url)}): {describe_error(exc)}"
        ) from None


def predecessor_states(app: App, env: EnvironmentConfig, fresh: bool = False) -> list[TargetState]:
    """What each database of `env`'s predecessor has run. Cached per process (a fleet reads
    it once before forking); `fresh` reads it again, as the gate must once the lock is held:
    the predecessor may have moved (been downgraded) while we waited."""
    if env.promotes_from is None:
        return []
    if not fresh and env.promotes_from in app.predecessor_cache:
        return app.predecessor_cache[env.promotes_from]
    states = []
    keys = app.public_keys(env.promotes_from)
    for target in app.targets(env.promotes_from):
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, f"{target.env}/{target.name}")
        states.append(
            TargetState(target.name, state.applied, state.ledger, keys, env.promotes_from)
        )
    app.predecessor_cache[env.promotes_from] = states
    return states


def judge(
    app: App,
    env: EnvironmentConfig,
    revisions: Sequence[str],
    fresh: bool = False,
    evidence: Sequence[TargetState] | None = None,
) -> list[Step]:
    """The gate's verdict per revision, on the predecessor's databases as they are now, or
    on `evidence` (a release plan's signed rows) without opening them."""
    checksums = {rev: app.graph.get(rev).checksum for rev in revisions}
    if evidence is not None:
        preds = list(evidence)
    else:
        preds = predecessor_states(app, env, fresh) if revisions else []
    return gate(revisions, checksums, env.promotes_from, preds)


def upgrade_steps(app: App, heads: Sequence[str], to: str, env: str) -> list[str]:
    if to in heads:
        return []
    applied = set().union(*(app.graph.ancestors(h) for h in heads)) if heads else set()
    if to in applied:
        raise UsageError(
            f"--to {to} is below {env}'s current revision {', '.join(heads)}: that is not an "
            f"upgrade. To go back, use `orchestrator downgrade {env} --to {to} --reason ...`."
        )
    try:
        return app.graph.upgrade_path(heads, to)
    except RevisionsError as exc:
        raise UsageError(revision_error(exc)) from None


def checksum_drift(app: App, state: DbState) -> list[str]:
    checksums = {rev: app.graph.get(rev).checksum for rev in state.applied}
    return drift(state.applied, state.ledger, checksums)
