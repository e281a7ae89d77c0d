"""Use cases: wire the pure core (config, revisions, planning) to the shell (Alembic runner,
locks, ledger and audit store). Each public function returns plain data for the CLI."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from orchestrator import ledger
from orchestrator.alembic_runner import AlembicProject
from orchestrator.audit import AuditTrail, detect_actor, detect_git_sha
from orchestrator.config import (
    EnvironmentConfig,
    Environments,
    Settings,
    Target,
    load_environments,
    read_dotenv,
    resolve_targets,
)
from orchestrator.database import (
    current_heads,
    describe_error,
    is_postgresql,
    make_engine,
    safe_url,
)
from orchestrator.errors import LockTimeout, MigrationFailed, OrchestratorError, Refused, UsageError
from orchestrator.fleet import FleetOptions, fan_out, select_shard
from orchestrator.locks import DEFAULT_KEY, migration_lock
from orchestrator.logging import utc_now
from orchestrator.planning import LedgerEntry, Step, TargetState, drift, gate, refusal_message
from orchestrator.revisions import RevisionGraph, RevisionsError

Executor = Callable[[Connection, Callable[..., None]], None]
ONE_AT_A_TIME = FleetOptions()


# -- the application's collaborators, built once per process -----------------------------


@dataclass
class App:
    settings: Settings
    envs: Environments
    environ: dict[str, str]
    interactive: bool = False
    predecessor_cache: dict[str, list[TargetState]] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings | None = None, interactive: bool = False) -> App:
        settings = settings or Settings()
        envs = load_environments(settings.environments_path)
        environ = {**read_dotenv(settings.project_dir), **os.environ}
        return cls(settings, envs, environ, interactive)

    @cached_property
    def project(self) -> AlembicProject:
        return AlembicProject(self.settings.alembic_ini_path)

    @cached_property
    def graph(self) -> RevisionGraph:
        try:
            return self.project.graph
        except RevisionsError as exc:
            raise UsageError(f"The revision history cannot be read: {exc}") from None

    @cached_property
    def actor(self) -> str:
        return detect_actor(self.settings.actor, self.environ)

    @cached_property
    def git_sha(self) -> str | None:
        return detect_git_sha(self.settings.project_dir, self.environ)

    def targets(self, env: str) -> list[Target]:
        return resolve_targets(self.envs.get(env), self.environ, self.settings.project_dir)

    def resolve(self, ref: str) -> str:
        try:
            return self.graph.resolve(ref)
        except RevisionsError as exc:
            raise UsageError(_revision_error(exc)) from None


def _revision_error(exc: Exception) -> str:
    message = str(exc)
    if "head" in message.lower() and "multiple" in message.lower():
        return (
            f"{message.rstrip('.')}. Merge them with `alembic merge heads -m 'merge'`, "
            "or name a revision."
        )
    return message


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


# -- what a database has run ---------------------------------------------------------------


@dataclass(frozen=True)
class DbState:
    heads: tuple[str, ...]
    ledger: Mapping[str, LedgerEntry]
    applied: frozenset[str]


def read_state(connection: Connection, graph: RevisionGraph, where: str) -> DbState:
    heads = current_heads(connection)
    unknown = [h for h in heads if h not in graph]
    if unknown:
        raise UsageError(
            f"{where} is at revision {', '.join(unknown)}, which this project's history does "
            "not contain. Check out the code that database was migrated with."
        )
    applied: set[str] = set()
    for head in heads:
        applied |= graph.ancestors(head)
    return DbState(heads, ledger.latest_ledger(connection), frozenset(applied))


@contextmanager
def read_connection(target: Target) -> Iterator[Connection]:
    """A read-only look at one database; failures become one clear error."""
    engine = make_engine(target.url, "orchestrator status", writer=False)
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise MigrationFailed(
            f"Cannot read {target.env} ({safe_url(target.url)}): {describe_error(exc)}"
        ) from None
    finally:
        engine.dispose()


def predecessor_states(app: App, env: EnvironmentConfig) -> list[TargetState]:
    if env.promotes_from is None:
        return []
    if env.promotes_from in app.predecessor_cache:
        return app.predecessor_cache[env.promotes_from]
    states = []
    for target in app.targets(env.promotes_from):
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, f"{target.env}/{target.name}")
        states.append(TargetState(target.name, state.applied, state.ledger))
    app.predecessor_cache[env.promotes_from] = states
    return states


def judge(app: App, env: EnvironmentConfig, revisions: Sequence[str]) -> list[Step]:
    checksums = {rev: app.graph.get(rev).checksum for rev in revisions}
    preds = predecessor_states(app, env) if revisions else []
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
        raise UsageError(_revision_error(exc)) from None


def checksum_drift(app: App, state: DbState) -> list[str]:
    checksums = {rev: app.graph.get(rev).checksum for rev in state.applied}
    return drift(state.applied, state.ledger, checksums)


# -- one run on one database ---------------------------------------------------------------


@dataclass
class RunResult:
    env: str
    target: str
    run_id: str
    outcome: str
    applied: list[str] = field(default_factory=list)
    message: str = ""
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TargetRun:
    """Lock, audit, gate and ledger around one migration of one database."""

    def __init__(
        self,
        app: App,
        target: Target,
        command: str,
        *,
        ticket: str | None = None,
        reason: str | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        self.app, self.target, self.command = app, target, command
        self.env = app.envs.get(target.env)
        self.run_id = new_run_id()
        self.lock_timeout = self.env.lock.timeout if lock_timeout is None else lock_timeout
        self.lock_key = self.env.lock.key or DEFAULT_KEY
        name = f"orchestrator {self.env.name} run={self.run_id} {app.actor}"
        self.engine: Engine = make_engine(target.url, name)
        fleet = target.name != target.env
        self.audit = AuditTrail(
            env=self.env.name,
            run_id=self.run_id,
            actor=app.actor,
            engine=self.engine,
            file=app.settings.audit_file,
            target=target.name if fleet else None,
            command=command,
            ticket=ticket,
            reason=reason,
        )
        self.applied: list[str] = []
        self.started_at = time.monotonic()

    @property
    def where(self) -> str:
        return (
            self.env.name
            if self.target.name == self.env.name
            else f"{self.env.name}/{self.target.name}"
        )

    def close(self) -> None:
        from orchestrator.audit import FINAL_WAIT

        self.audit.flush(wait=FINAL_WAIT)  # records a busy SQLite database could not take yet
        self.engine.dispose()

    # -- events ----------------------------------------------------------------------------

    def start(self, **fields: Any) -> None:
        self.started_at = time.monotonic()
        self.audit.common["git_sha"] = self.app.git_sha  # looked up only for a real run
        self.audit.emit(
            "run.started",
            pid=os.getpid(),
            host=socket.gethostname(),
            database=safe_url(self.target.url),
            **fields,
        )

    def refuse(self, message: str, steps: Sequence[Step] | None = None, **fields: Any) -> None:
        if steps is not None:
            blocked = [{"revision": s.revision, "reason": s.reason} for s in steps if s.blocked]
            self.audit.emit("gate.refused", outcome="refused", blocked=blocked, **fields)
        self.audit.emit("run.refused", outcome="refused", error=message, **fields)
        raise Refused(message)

    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started_at) * 1000)

    def finish(self, **fields: Any) -> RunResult:
        self.audit.emit(
            "run.succeeded",
            outcome="succeeded",
            applied=self.applied,
            duration_ms=self.elapsed_ms(),
            **fields,
        )
        return RunResult(self.env.name, self.target.name, self.run_id, "succeeded", self.applied)

    @contextmanager
    def locked(self) -> Iterator[None]:
        def on_wait(holder: dict[str, Any]) -> None:
            self.audit.emit("lock.waiting", lock_key=self.lock_key, holder=holder)

        try:
            with migration_lock(
                self.engine,
                self.lock_key,
                self.lock_timeout,
                on_wait,
                f"orchestrator {self.env.name} run={self.run_id} {self.app.actor}",
            ):
                self.audit.emit("lock.acquired", lock_key=self.lock_key)
                try:
                    yield
                finally:
                    self.audit.emit("lock.released", lock_key=self.lock_key)
        except LockTimeout as exc:
            self.audit.emit(
                "run.failed",
                outcome="failed",
                error=exc.message,
                holder=exc.details.get("holder"),
                lock_key=self.lock_key,
            )
            raise

    # -- state under the lock ----------------------------------------------------------------

    def read(self) -> DbState:
        try:
            with self.engine.connect() as connection:
                connection.execution_options(read_only=True)  # SQLite: no write lock to wait for
                return read_state(connection, self.app.graph, self.where)
        except SQLAlchemyError as exc:
            raise MigrationFailed(f"Cannot read {self.where}: {describe_error(exc)}") from None

    def open_runs(self) -> bool:
        """Whether some run on this database started and never ended (live, or dead)."""
        with self.engine.connect() as connection:
            return bool(ledger.runs_without_end(connection))

    def close_dead_runs(self) -> list[str]:
        """Under the lock: runs that started and never ended are dead; record them."""
        with self.engine.connect() as connection:
            open_runs = [
                r for r in ledger.runs_without_end(connection) if r["run_id"] != self.run_id
            ]
            if not open_runs:
                return []
            held = ledger.acquired_runs(connection, [r["run_id"] for r in open_runs])
            live = live_run_ids(connection)
        dead = [r for r in open_runs if r["run_id"] in held or not run_alive(r, live)]
        for run in dead:
            self._close_dead_run(run)
        return [r["run_id"] for r in dead]

    def _close_dead_run(self, run: Mapping[str, Any]) -> None:
        """Record a dead run's end on its own behalf (its run id, its actor), first writing
        the audit events of the revisions its ledger shows it committed: a run killed
        mid-way had them queued, not yet written."""
        trail = AuditTrail(
            env=self.env.name,
            run_id=run["run_id"],
            actor=run.get("actor") or "unknown",
            engine=self.engine,
            file=self.app.settings.audit_file,
            target=run.get("target"),
            command=run.get("command"),
            noticed_by=self.run_id,
        )
        with self.engine.connect() as connection:
            rows = ledger.ledger_rows(connection, run["run_id"])
            known = ledger.audited_revisions(connection, run["run_id"]) if rows else set()
        for row in rows:
            if row["revision"] not in known and row["direction"] != "baseline":
                trail.emit(
                    "migration.applied" if row["direction"] == "up" else "migration.reverted",
                    defer=True,
                    revision=row["revision"],
                    checksum=row["checksum"],
                    applied_at=row["at"],
                )
        trail.emit(
            "run.interrupted",
            outcome="interrupted",
            reason=f"started {run['timestamp']} by pid {run.get('pid')} and never finished",
        )

    # -- applying ----------------------------------------------------------------------------

    def apply(self, revisions: Sequence[str], direction: str, executor: Executor) -> None:
        graph = self.app.graph
        last = [time.monotonic()]

        def on_version_apply(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
            if step.is_stamp:
                return
            revision = step.up_revision_id
            checksum = graph.get(revision).checksum if revision in graph else ""
            now = time.monotonic()
            duration_ms = round((now - last[0]) * 1000)
            last[0] = now
            up = step.is_upgrade
            ledger.record_revision(
                ctx.connection,
                revision=revision,
                checksum=checksum,
                direction="up" if up else "down",
                run_id=self.run_id,
                env=self.env.name,
                actor=self.app.actor,
                at=utc_now(),
            )
            self.audit.emit(
                "migration.applied" if up else "migration.reverted",
                defer=True,  # the ledger row is the in-transaction record; this waits
                # for the next write, so a run of many revisions writes its audit rows once
                revision=revision,
                checksum=checksum,
                from_revision=",".join(step.source_revision_ids) or None,
                to_revision=",".join(step.destination_revision_ids) or None,
                duration_ms=duration_ms,
            )
            self.applied.append(revision)

        with self.engine.connect() as connection:
            self._session_settings(connection)
            try:
                executor(connection, on_version_apply)
            except Exception as exc:
                failed = next((r for r in revisions if r not in self.applied), None)
                error = describe_error(exc)
                self.audit.emit("migration.failed", outcome="failed", revision=failed, error=error)
                message = (
                    f"Revision {failed} failed on {self.where}: {error}. It was rolled back; "
                    f"{len(self.applied)} earlier revision(s) of this run stay applied "
                    f"({', '.join(self.applied) or 'none'}); {self.where} is at "
                    f"{self._where_now()}."
                )
                self.audit.emit(
                    "run.failed",
                    outcome="failed",
                    revision=failed,
                    error=message,
                    duration_ms=self.elapsed_ms(),
                )
                raise MigrationFailed(message, revision=failed) from None

    def _where_now(self) -> str:
        try:
            return ", ".join(self.read().heads) or "base"
        except OrchestratorError:
            return "a revision we could not read back"

    def _session_settings(self, connection: Connection) -> None:
        if not is_postgresql(connection):
            return
        # Each revision commits on its own; none of those commits waits for the disk. The
        # run's last audit row is committed durably on another session, which flushes the
        # WAL, theirs included, before we report success. A server crash mid-run can lose
        # only whole revisions, ledger rows with them: never a half, never a reported one.
        connection.execute(text("SET synchronous_commit = off"))
        session = self.env.session
        for name, value in (
            ("lock_timeout", session.lock_timeout),
            ("statement_timeout", session.statement_timeout),
        ):
            if value is not None:
                connection.execute(
                    text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value}
                )
        # A runner killed mid-statement frees the lock at once (its lock session sees EOF), but
        # the backend of its migration would go on running the statement, holding its locks,
        # until it next talks to the dead client. Have it notice the dead client (PG >= 14).
        if (connection.dialect.server_version_info or (0,)) >= (14,):
            connection.execute(
                text("SELECT set_config('client_connection_check_interval', '1s', false)")
            )
        connection.commit()


_RUN_IN_APP = re.compile(r"run=(\w+)")


def live_run_ids(connection: Connection) -> set[str] | None:
    """Run ids with a live session (PostgreSQL); None where the database cannot tell."""
    if not is_postgresql(connection):
        return None
    rows = connection.execute(
        text(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE application_name LIKE 'orchestrator%'"
        )
    )
    return {m.group(1) for (name,) in rows if (m := _RUN_IN_APP.search(name or ""))}


def run_alive(run: Mapping[str, Any], live: set[str] | None) -> bool:
    if live is not None:
        return run["run_id"] in live
    if run.get("host") != socket.gethostname() or not run.get("pid"):
        return True  # another machine: we cannot tell, assume alive
    try:
        os.kill(int(run["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- approval and lint ------------------------------------------------------------------------


def check_approval(app: App, run: TargetRun, approve: bool) -> None:
    """Where approval is required: --approve, or the environment's name typed on a terminal;
    how it was given goes on the run's events."""
    if not run.env.policy.require_approval:
        return
    if approve:
        run.audit.common["approval"] = "--approve"
        return
    if app.interactive and sys.stdin.isatty():
        # the prompt goes to stderr: stdout may be piped into another program
        sys.stderr.write(f"{run.env.name} requires approval. Type its name to proceed: ")
        sys.stderr.flush()
        typed = sys.stdin.readline().strip()
        if typed == run.env.name:
            run.audit.common["approval"] = "typed"
            return
        run.refuse(f"Refused: the typed name {typed!r} does not match {run.env.name!r}.")
    run.refuse(
        f"Refused: {run.env.name} requires approval (policy.require_approval). Re-run with "
        "--approve (plain alembic: -x approve=yes), or run on a terminal to confirm by typing "
        "the environment's name."
    )


def lint_revisions(
    app: App, env: EnvironmentConfig, revisions: Sequence[str], start: Sequence[str]
) -> tuple[list[Any], str | None]:
    """Findings for the revisions about to run, and a note when lint could not run."""
    from orchestrator import lint

    if env.policy.lint == "off" or not revisions:
        return [], None
    try:
        sql = app.project.offline_sql(revisions, "postgresql", start[0] if start else None)
        waivers = {
            rev: lint.parse_waivers(app.graph.get(rev).path.read_text(encoding="utf-8"))
            for rev in revisions
        }
        exclude = [*lint.DEFAULT_EXCLUDE, *env.policy.lint_exclude]
        return lint.lint_revisions(sql, waivers, exclude=exclude), None
    except lint.LintError as exc:
        return [], str(exc)


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
    from orchestrator.lint import blocking

    mode = run.env.policy.lint
    record_waivers(run, findings)
    if problem is not None:
        if mode == "error":
            run.refuse(f"Refused: lint is required on {run.env.name} but could not run: {problem}")
        run.audit.log.warning("lint.unavailable", env=run.env.name, error=problem)
        return
    bad = blocking(findings)
    for finding in bad:
        run.audit.log.warning(
            "lint.finding",
            revision=finding.revision,
            rule=finding.rule,
            message=finding.message,
            help=finding.help,
        )
    if bad and mode == "error":
        listed = " ".join(
            f"{f.revision} breaks {f.rule}: {f.message.rstrip('.')}. {f.help}".rstrip() for f in bad
        )
        waiver = f"# orchestrator: allow {bad[0].rule}"
        run.refuse(
            f"Refused by lint on {run.env.name}: {listed} Fix the migration or, if it is safe "
            f"here, waive the rule for that revision with a line `{waiver}` in its file, "
            "saying why.",
            findings=[f.__dict__ for f in bad],
        )


# -- migrate, promote, rollout ----------------------------------------------------------------


@dataclass
class Options:
    approve: bool = False
    ticket: str | None = None
    lock_timeout: float | None = None


def migrate(
    app: App, env_name: str, to: str | None, options: Options, fleet: FleetOptions = ONE_AT_A_TIME
) -> list[RunResult]:
    env = app.envs.get(env_name)
    targets = select_shard(app.targets(env.name), fleet.shard)
    destination = app.resolve(to or "head")
    return each_target(
        app, env, targets, lambda t: migrate_target(app, t, destination, options), fleet
    )


def each_target(
    app: App,
    env: EnvironmentConfig,
    targets: list[Target],
    work: Callable[[Target], RunResult],
    fleet: FleetOptions,
) -> list[RunResult]:
    """One database: run it here, errors propagate. A fleet: fan out, collect outcomes."""
    if len(targets) == 1 and fleet == ONE_AT_A_TIME:
        return [work(targets[0])]
    predecessor_states(app, env)  # read the predecessor once, before forking workers
    return fan_out(targets, work, fleet)


def migrate_target(app: App, target: Target, destination: str, options: Options) -> RunResult:
    run = TargetRun(
        app, target, "migrate", ticket=options.ticket, lock_timeout=options.lock_timeout
    )
    try:
        return _migrate(app, run, destination, options)
    finally:
        run.close()
        app.predecessor_cache.pop(target.env, None)  # it may have moved: successors re-read it


def _migrate(app: App, run: TargetRun, destination: str, options: Options) -> RunResult:
    state = run.read()
    revisions = upgrade_steps(app, state.heads, destination, run.where)
    drifted = checksum_drift(app, state)
    if not revisions and not drifted:
        if not run.open_runs():
            return RunResult(
                run.env.name, run.target.name, run.run_id, "succeeded", message="nothing to do"
            )
        # A run killed after its last revision committed left no end: at the target, yet not
        # done. Take the lock (a live run finishes first) and record the dead one as interrupted.
        run.start(from_revision=",".join(state.heads) or None, to_revision=destination)
        with run.locked():
            run.close_dead_runs()
        done = run.finish(to_revision=destination)
        done.message = "nothing to do"
        return done
    # lint first, so that the waivers in force are on every event of the run, run.started too
    findings, problem = lint_revisions(app, run.env, revisions, state.heads)
    record_waivers(run, findings)
    run.start(from_revision=",".join(state.heads) or None, to_revision=destination)
    if drifted:
        run.refuse(
            f"Refused: {', '.join(drifted)} changed since {run.where} ran it (checksum drift). "
            "Restore the file as it ran, or downgrade below it and upgrade again.",
            drift=drifted,
        )
    steps = judge(app, run.env, revisions)
    if any(s.blocked for s in steps):
        run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
    check_approval(app, run, options.approve)
    enforce_lint(run, findings, problem)
    with run.locked():
        run.close_dead_runs()
        state = run.read()  # another run may have moved it while we waited
        revisions = upgrade_steps(app, state.heads, destination, run.where)
        if not revisions:
            return run.finish(message="already at target")
        steps = judge(app, run.env, revisions)
        if any(s.blocked for s in steps):
            run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
        run.audit.emit("gate.passed", revisions=list(revisions), predecessor=run.env.promotes_from)
        project = app.project

        def execute(connection: Connection, hook: Callable[..., None]) -> None:
            project.run(connection, revisions, "up", hook)

        run.apply(revisions, "up", execute)
        return run.finish(to_revision=destination)


def promote(
    app: App, env_name: str, options: Options, fleet: FleetOptions = ONE_AT_A_TIME
) -> list[RunResult]:
    env = app.envs.get(env_name)
    if env.promotes_from is None:
        raise UsageError(
            f"{env.name} promotes from nothing: it is the first environment. Use migrate."
        )
    heads: set[tuple[str, ...]] = set()
    for target in app.targets(env.promotes_from):
        with read_connection(target) as connection:
            heads.add(current_heads(connection))
    if len(heads) != 1:
        raise Refused(
            f"Refused: the databases of {env.promotes_from} are at different revisions "
            f"({', '.join(sorted(','.join(h) or 'base' for h in heads))}); "
            f"finish {env.promotes_from} first."
        )
    (pred_heads,) = heads
    if not pred_heads:
        raise Refused(f"Refused: {env.promotes_from} has run nothing yet; nothing to promote.")
    if len(pred_heads) > 1:
        raise UsageError(f"{env.promotes_from} has several heads ({', '.join(pred_heads)}).")
    targets = select_shard(app.targets(env.name), fleet.shard)
    work = lambda t: migrate_target(app, t, pred_heads[0], options)  # noqa: E731
    return each_target(app, env, targets, work, fleet)


def rollout(
    app: App, through: str, to: str | None, options: Options, fleet: FleetOptions = ONE_AT_A_TIME
) -> list[RunResult]:
    """Each environment on the path to `through`, in order; stop at the first failure."""
    results: list[RunResult] = []
    destination = app.resolve(to or "head")
    # every environment's databases resolved first: a missing variable for the last one
    # must not show up after the first ones have been migrated
    path = [(app.envs.get(name), app.targets(name)) for name in app.envs.path_to(through)]
    for env, all_targets in path:
        targets = select_shard(all_targets, fleet.shard)
        work = lambda t: migrate_target(app, t, destination, options)  # noqa: E731
        done = each_target(app, env, targets, work, fleet)
        results.extend(done)
        if any(r.exit_code for r in done):
            break
    return results


# -- downgrade and baseline -------------------------------------------------------------------


def downgrade(
    app: App, env_name: str, to: str, reason: str, force: bool, options: Options
) -> list[RunResult]:
    env = app.envs.get(env_name)
    if not reason.strip():
        raise UsageError("A downgrade needs --reason TEXT: it goes on the audit trail.")
    return [
        _downgrade_target(app, target, to, reason, force, options)
        for target in app.targets(env.name)
    ]


def _downgrade_target(
    app: App, target: Target, to: str, reason: str, force: bool, options: Options
) -> RunResult:
    run = TargetRun(
        app,
        target,
        "downgrade",
        ticket=options.ticket,
        reason=reason,
        lock_timeout=options.lock_timeout,
    )
    try:
        state = run.read()
        destination = _downgrade_destination(app, state.heads, to)
        run.start(
            from_revision=",".join(state.heads) or None,
            to_revision=destination,
            forced=force or None,
        )
        if not run.env.policy.allow_downgrade and not force:
            run.refuse(
                f"Refused: downgrades are not allowed on {run.env.name} (policy.allow_downgrade "
                "is false). If you must, re-run with --force; the reason is recorded."
            )
        check_approval(app, run, options.approve)
        with run.locked():
            run.close_dead_runs()
            state = run.read()
            destination = _downgrade_destination(app, state.heads, to)
            revisions = app.graph.downgrade_path(state.heads, destination)
            if not revisions:
                return run.finish(message="nothing to revert")
            project = app.project

            def execute(connection: Connection, hook: Callable[..., None]) -> None:
                project.run(connection, revisions, "down", hook)

            run.apply(revisions, "down", execute)
            return run.finish(to_revision=destination)
    finally:
        run.close()


def _downgrade_destination(app: App, heads: Sequence[str], to: str) -> str:
    try:
        if to.startswith("-") or to.startswith("+"):
            return app.graph.resolve_relative(heads, to)
        return app.graph.resolve(to)
    except RevisionsError as exc:
        raise UsageError(_revision_error(exc)) from None


def baseline(app: App, env_name: str, revision: str, reason: str) -> list[RunResult]:
    env = app.envs.get(env_name)
    if not reason.strip():
        raise UsageError("A baseline needs --reason TEXT: it goes on the audit trail.")
    rev = app.resolve(revision)
    results = []
    for target in app.targets(env.name):
        run = TargetRun(app, target, "baseline", reason=reason)
        try:
            run.start(to_revision=rev)
            with run.locked():
                state = run.read()
                if state.heads and state.heads != (rev,):
                    run.refuse(
                        f"Refused: {run.where} is at {', '.join(state.heads)}, not {rev}. "
                        "Baseline adopts the revision a database is at; name that one."
                    )
                chain = sorted(app.graph.ancestors(rev), key=lambda r: len(app.graph.ancestors(r)))
                with run.engine.begin() as connection:
                    if not state.heads:
                        app.project.stamp(connection, rev)
                    for r in chain:
                        ledger.record_revision(
                            connection,
                            revision=r,
                            checksum=app.graph.get(r).checksum,
                            direction="baseline",
                            run_id=run.run_id,
                            env=run.env.name,
                            actor=app.actor,
                            at=utc_now(),
                        )
                run.applied = chain
                results.append(run.finish(to_revision=rev, baselined=len(chain)))
        finally:
            run.close()
    return results


# -- plain `alembic` through this repository's env.py --------------------------------------------


def _plain_env(context: Any) -> tuple[App, Target]:
    settings = Settings()
    app = App.load(settings, interactive=True)
    name = context.get_x_argument(as_dictionary=True).get("env") or settings.env
    targets = app.targets(app.envs.get(name).name)
    wanted = context.get_x_argument(as_dictionary=True).get("target")
    if wanted:
        targets = [t for t in targets if t.name == wanted]
    if len(targets) != 1:
        raise UsageError(
            f"{name} has {len(targets)} databases: name one with `-x target=NAME`, or use "
            "`orchestrator migrate`, which fans out over all of them."
        )
    return app, targets[0]


def plain_alembic_dialect(context: Any) -> str:
    _, target = _plain_env(context)
    return target.url.split(":", 1)[0].split("+", 1)[0]


def plain_alembic(context: Any, options: dict[str, Any]) -> None:
    """`alembic upgrade/downgrade/...`: same lock, ledger rows and audit trail as our runs."""
    from alembic.util import CommandError

    from orchestrator.logging import configure_logging

    try:
        app, target = _plain_env(context)
    except OrchestratorError as exc:
        raise CommandError(exc.message) from None
    configure_logging(app.settings.log_format)
    cmd_opts = getattr(context.config, "cmd_opts", None)
    command = (
        cmd_opts.cmd[0].__name__ if cmd_opts is not None and getattr(cmd_opts, "cmd", None) else ""
    )
    run = TargetRun(app, target, f"alembic {command}".strip())

    def execute(connection: Connection, hook: Callable[..., None]) -> None:
        context.configure(connection=connection, on_version_apply=hook, **options)
        with context.begin_transaction():
            context.run_migrations()

    x_args = context.get_x_argument(as_dictionary=True)
    try:
        if command not in ("upgrade", "downgrade", "stamp"):
            with run.engine.connect() as connection:
                execute(connection, lambda **_: None)
                connection.commit()
            return
        run.start()
        revisions: list[str] = []
        if command == "upgrade":
            state = run.read()
            destination = app.resolve(context.get_revision_argument() or "head")
            revisions = upgrade_steps(app, state.heads, destination, run.where)
            steps = judge(app, run.env, revisions)
            if any(s.blocked for s in steps):
                run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
        if command == "downgrade" and not run.env.policy.allow_downgrade:
            run.refuse(
                f"Refused: downgrades are not allowed on {run.env.name}. If you must, use "
                f"`orchestrator downgrade {run.env.name} --to REV --reason TEXT --force`."
            )
        check_approval(app, run, approve=x_args.get("approve") in ("1", "yes", "true"))
        with run.locked():
            run.close_dead_runs()
            run.apply(revisions, command, execute)
            run.finish()
    except OrchestratorError as exc:
        raise CommandError(exc.message) from None
    finally:
        run.close()
