"""What a database has run (heads, ledger), what its predecessor has run, and the gate's
judgement of revisions against that evidence."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.config import EnvironmentConfig, Target
from orchestrator.core.errors import MigrationFailed, OrchestratorError, UsageError
from orchestrator.core.planning import (
    LedgerEntry,
    Step,
    TargetState,
    drift,
    env_py_difference,
    gate,
)
from orchestrator.db.database import (
    VERSION_TABLE,
    current_heads,
    describe_error,
    open_read_ahead,
    prefetched,
    read_at_once,
    read_only,
    safe_url,
)
from orchestrator.evidence import ledger
from orchestrator.migrations.revisions import RevisionGraph, RevisionsError, checksum_file
from orchestrator.running import read_ahead
from orchestrator.running.app import App, revision_error
from orchestrator.running.predecessor_batch import STATE_QUERIES, Batch, read_batch


@dataclass(frozen=True)
class DbState:
    heads: tuple[str, ...]
    ledger: Mapping[str, LedgerEntry]
    applied: frozenset[str]
    history: tuple[tuple[str, str, str], ...]  # every ledger row: (revision, direction, run_id)


def read_state(connection: Connection, graph: RevisionGraph, where: str) -> DbState:
    # one round trip where the tables are there (the usual case), three where they may not be
    found = prefetched(connection, "state") or read_at_once(
        connection, STATE_QUERIES, [VERSION_TABLE, ledger.LEDGER_TABLE]
    )
    if found is not None:
        versions, rows = found
        heads = tuple(sorted(row["version_num"] for row in versions))
    else:
        heads = current_heads(connection)
        rows = ledger.ledger_table_rows(connection)
    return state_of(heads, rows, graph, where)


def state_of(
    heads: tuple[str, ...], rows: Sequence[Mapping[str, Any]], graph: RevisionGraph, where: str
) -> DbState:
    """Pure: a database's state from its heads and its ledger table's rows (oldest first)."""
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


READER_NAME = "orchestrator status"  # the application_name of our read-only sessions


@contextmanager
def read_connection(target: Target) -> Iterator[Connection]:
    """A read-only look at one database; failures become one clear error."""
    try:
        with read_only(target.url, READER_NAME) as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise MigrationFailed(
            f"Cannot read {target.env} ({safe_url(target.url)}): {describe_error(exc)}"
        ) from None


@contextmanager
def looking_at(app: App, target: Target, *, status: bool = False) -> Iterator[Connection]:
    """`read_connection`, with what a run would read of it (its state, open runs, recorded
    schema and stamp) read in its first round trip; for `status`, its evidence and last
    runs' ends too."""
    env = app.envs.get(target.env)
    signed = app.public_keys(env.name) is not None
    with (
        read_connection(target) as connection,
        read_ahead.looking(
            connection,
            evidence=status and signed,
            drift=env.policy.schema_drift != "off",
            signed=signed,
            schemas=env.schemas,
            ends=status,
        ),
    ):
        yield connection


# a run's own look at its target (TargetRun.reading): no connection of its own
OwnReading = Callable[[], AbstractContextManager[Connection]]


def predecessor_states(
    app: App, env: EnvironmentConfig, fresh: bool = False, own: OwnReading | None = None
) -> list[TargetState]:
    """What each database of `env`'s predecessor has run. Cached per process (a fleet reads
    it once before forking); `fresh` reads it again, as the gate must once the lock is held:
    the predecessor may have moved (been downgraded) while we waited. `own`: the run's look
    at its own database, where its end entries say what of the predecessor it witnessed."""
    if env.promotes_from is None:
        return []
    if not fresh and env.promotes_from in app.predecessor_cache:
        return app.predecessor_cache[env.promotes_from]
    states = []
    keys = app.public_keys(env.promotes_from)
    # freshness: what this environment's own signed end entries say it saw of the predecessor
    seen = own_witnessed(app, env, own) if keys and (fresh or own is not None) else {}
    # the successor's schema check after its run compares with the predecessor's schema:
    # read with the rest (commands/drift.py, predecessor_schemas)
    schemas = app.envs.get(env.promotes_from).schemas
    with_schema = env.policy.schema_drift != "off"
    for target in app.targets(env.promotes_from):
        where = f"{target.env}/{target.name}"
        schema = None
        with read_connection(target) as connection:
            batch = read_batch(connection, keys, seen or {}, with_schema, schemas)
            if batch is None:  # step by step: SQLite, or a table not there
                state = read_state(connection, app.graph, where)
                chained = (
                    believed(connection, keys, env.promotes_from, seen, env.name) if keys else None
                )
                env_py = ledger.last_env_py(connection)
            else:
                state = state_of(batch.heads, batch.ledger, app.graph, where)
                chained = (
                    believed(connection, keys, env.promotes_from, seen, env.name, batch=batch)
                    if keys
                    else None
                )
                env_py = batch.env_py
                schema = batch.schema(keys, target)
        states.append(
            TargetState(
                target.name,
                state.applied,
                state.ledger,
                keys,
                env.promotes_from,
                env_py=env_py,
                schema=schema,
            )
            if chained is None
            else TargetState(
                target.name,
                state.applied,
                state.ledger,
                keys,
                env.promotes_from,
                env_py=env_py,
                broken=chained[0],
                proven=chained[1],
                head=chained[2],
                snapshot=chained[3],
                schema=schema,
            )
        )
    app.predecessor_cache[env.promotes_from] = states
    return states


def open_predecessor_ahead(app: App, env: EnvironmentConfig) -> None:
    """The connection the gate will read `env`'s predecessor over, opened now in a thread:
    its round trips go by while the run reads its own database."""
    name = env.promotes_from
    if name is None or name in app.predecessor_cache or per_developer(app, name) is not None:
        return
    try:
        targets = app.targets(name)
    except OrchestratorError:  # (a variable unset) said by the read itself, where it comes
        return
    if len(targets) == 1:  # a fleet's databases are read in threads of their own
        open_read_ahead(targets[0].url, READER_NAME)


def believed(
    connection: Connection,
    keys: Sequence[Any],
    env: str,
    seen: Mapping[str, Any] | None = None,
    seen_by: str = "",
    whole: bool = False,
    batch: Batch | None = None,
) -> tuple[
    str | None, dict[str, tuple[str, str, str]], dict[str, Any] | None, dict[str, Any] | None
]:
    """A signing predecessor's evidence, verified before it is believed: why it cannot be
    (broken chain, missing evidence, audit rows no end entry covers), else per revision
    its chain's newest entry, the head relied on, and what the chain proved up to it (for
    the successor to sign with its witness: its next read starts there). `batch`: what
    `read_batch` read of it already (the rest, if any, is read here)."""
    from orchestrator.core import chain as pure
    from orchestrator.evidence import chain as store
    from orchestrator.evidence.audit_proof import prove_audit
    from orchestrator.running.liveness import live_run_ids

    if batch is not None:
        evidence = store.read_evidence(connection, keys, env, seen, batch.identity, batch.chain)
    else:
        evidence = store.read_evidence(connection, keys, env, seen)
    # the ledger table against the chain: judged per revision by the gate (`proven`);
    # `whole` (status) asks it of the whole table
    problem = evidence.problem or (store.ledger_problem(connection, evidence) if whole else None)
    witnessed = (seen or {}).get(evidence.database)
    if problem is None and witnessed is not None:
        problem = pure.witnessed_problem(evidence.verdict, witnessed, env, seen_by)
    if problem is None:
        if batch is not None and batch.live is not None:
            proof = prove_audit(connection, evidence, None, batch.live, batch.audit)
        else:
            proof = prove_audit(connection, evidence, None, live_run_ids(connection))
        if proof.problem is not None:
            problem = f"{env}'s audit trail does not verify: {proof.problem}"
    head = evidence.head()
    snapshot = pure.snapshot(evidence.verdict) if head else None
    return problem, proven_rows(evidence.verdict), head.as_dict() if head else None, snapshot


def proven_rows(verdict: Any) -> dict[str, tuple[str, str, str]]:
    """Per revision, its newest ledger entry in a verified chain (checksum, direction,
    run_id): what the gate believes (also of a release plan's chain segment)."""
    from orchestrator.core import chain as pure

    return {
        str(row.get("revision")): (
            str(row.get("checksum")),
            str(row.get("direction")),
            str(row.get("run_id")),
        )
        for row in pure.ledger_rows(verdict)
        if row.get("direction") != "stamped"
    }


def own_witnessed(app: App, env: EnvironmentConfig, own: OwnReading | None) -> dict[str, Any]:
    """Per predecessor database, the newest head `env`'s own signed end entries witnessed
    (each entry's signature checked with `env`'s keys: a forged witness proves nothing): on
    the run's own database where it is given (`own`), else on each of `env`'s."""
    from orchestrator.evidence import chain as store

    own_keys = app.public_keys(env.name)
    newest: dict[str, Any] = {}
    if not own_keys or env.promotes_from is None:
        return newest
    readings = (
        [own] if own is not None else [partial(read_connection, t) for t in app.targets(env.name)]
    )
    for reading in readings:
        with reading() as connection:
            rows = store.recent_ends(connection)
            database = store.database_identity(connection) if rows else ""
        for head in store.signed_witnesses(rows, own_keys, env.name, database, env.promotes_from):
            if head.database not in newest or newest[head.database].seq < head.seq:
                newest[head.database] = head
    return newest


def judge(
    app: App,
    env: EnvironmentConfig,
    revisions: Sequence[str],
    fresh: bool = False,
    evidence: Sequence[TargetState] | None = None,
    own: OwnReading | None = None,
) -> list[Step]:
    """The gate's verdict per revision, on the predecessor's databases as they are now, or
    on `evidence` (a release plan's signed rows) without opening them."""
    checksums = {rev: app.graph.get(rev).checksum for rev in revisions}
    local = per_developer(app, env.promotes_from) if evidence is None else None
    if local is not None:
        return [Step(rev, "allowed", local) for rev in revisions]
    if evidence is not None:
        preds = list(evidence)
    else:
        preds = predecessor_states(app, env, fresh, own) if revisions else []
    return gate(revisions, checksums, env.promotes_from, preds, file_digest(app))


def env_py_note(
    app: App, env: EnvironmentConfig, evidence: Sequence[TargetState] | None = None
) -> str | None:
    """What differs between this checkout's env.py and the predecessor's last run, from the
    predecessor's states the gate read (cached) or a plan's evidence."""
    if env.promotes_from is None:
        return None
    states = list(evidence) if evidence is not None else predecessor_states(app, env)
    return env_py_difference(env.promotes_from, app.project.env_py_checksum, states)


def file_digest(app: App) -> Callable[[str], str | None]:
    """sha256 now of a project file named relative to the project directory, as a run
    records what it read; None when it is not there (or names a place outside it)."""
    root = Path(os.path.realpath(app.settings.project_dir))

    def digest(name: str) -> str | None:
        path = Path(os.path.realpath(root / name))
        if root not in path.parents:
            return None
        try:
            return checksum_file(path)
        except OSError:
            return None

    return digest


def expected_reads(
    app: App,
    env: EnvironmentConfig,
    revisions: Sequence[str],
    evidence: Sequence[TargetState] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Per revision, the files its runs on the predecessor's databases read, where their
    ledger rows record them (the evidence the gate just judged: cached, not read again)."""
    if env.promotes_from is None or not revisions:
        return {}
    preds = list(evidence) if evidence is not None else predecessor_states(app, env)
    out: dict[str, list[dict[str, str]]] = {}
    for rev in revisions:
        for state in preds:
            entry = state.ledger.get(rev)
            files = entry.files_read if entry is not None else None
            if files is not None:
                out.setdefault(rev, []).append(files)
    return out


def per_developer(app: App, name: str | None) -> str | None:
    """Why `name` gates nothing here, or None when it does. A predecessor whose only
    database is its embedded SQLite default (its variable unset: a pipeline, or another
    machine) is one developer's own file, no evidence for a shared environment: its
    successor is then the first gated environment. Set the variable (a shared dev
    database) and the gate reads it."""
    if name is None:
        return None
    db = app.envs.get(name).database
    embedded = bool(db.url and db.url.startswith("sqlite"))
    if not embedded or not db.url_env or db.targets or db.databases or db.databases_file:
        return None
    if app.environ.get(db.url_env):
        return None
    return (
        f"not gated: {name} is each developer's own database ({db.url_env} unset), "
        "so this is the first gated environment"
    )


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
