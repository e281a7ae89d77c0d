"""One run on one database: lock, audit trail, ledger rows and session settings around the
revisions it applies; and which runs are still alive."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from orchestrator import ledger
from orchestrator.app import App, new_run_id
from orchestrator.audit import AuditTrail
from orchestrator.config import Target
from orchestrator.database import (
    current_heads,
    describe_error,
    is_postgresql,
    make_engine,
    safe_url,
)
from orchestrator.errors import LockTimeout, MigrationFailed, OrchestratorError, Refused
from orchestrator.evidence import DbState, read_state
from orchestrator.locks import DEFAULT_KEY, migration_lock
from orchestrator.logging import utc_now
from orchestrator.planning import Step
from orchestrator.results import RunResult
from orchestrator.revisions import reverts_nothing

Executor = Callable[[Connection, Callable[..., None]], None]


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
        self.schema_fingerprint: str | None = None
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
        if self.app.git_sha and self.app.git_dirty:
            self.audit.common["git_dirty"] = True  # what ran is not (all) in that commit
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
        if self.applied:  # the schema changed: record what it is now
            fields.setdefault("schema_fingerprint", self.record_schema())
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

    def record_schema(self) -> str | None:
        """Under the lock, after a run that changed the database: record the schema it left
        at the revision it left (what `status` and `drift` compare with later)."""
        if self.schema_fingerprint is not None:
            return self.schema_fingerprint
        from orchestrator.schema import fingerprint
        from orchestrator.schema_reader import catalog_stamp, read_schema

        try:
            with self.engine.begin() as connection:
                description = read_schema(connection)
                self.schema_fingerprint = fingerprint(description)
                ledger.record_schema(
                    connection,
                    heads=current_heads(connection),
                    fingerprint=self.schema_fingerprint,
                    description=description,
                    stamp=catalog_stamp(connection),
                    run_id=self.run_id,
                    env=self.env.name,
                    actor=self.app.actor,
                    at=utc_now(),
                )
        except SQLAlchemyError as exc:  # the run itself succeeded: say so, and why not this
            self.schema_fingerprint = None
            self.audit.emit("schema.not_recorded", error=describe_error(exc))
        return self.schema_fingerprint

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
        """Run `executor` (one transaction per revision) with our hook in each transaction.

        The hook writes the revision's ledger row inside its transaction. A revision counts
        as applied, and its audit event is queued, only once that transaction committed:
        when the next one begins, or when the executor returns. A revision can still fail at
        COMMIT (a deferred constraint), after the hook ran.
        """
        graph = self.app.graph
        last = [time.monotonic()]
        uncommitted: list[tuple[str, dict[str, Any]]] = []

        def committed() -> None:
            for revision, record in uncommitted:
                self.audit.emit(
                    record.pop("event"),
                    defer=True,  # the ledger row is the in-transaction record; this waits
                    # for the next write, so a run of many revisions writes its audit rows once
                    **record,
                )
                self.applied.append(revision)
            uncommitted.clear()

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
            # a downgrade() that is `pass`: marked undone, its changes stay (said, not hidden)
            hollow = not up and revision in graph and reverts_nothing(graph.get(revision).path)
            if hollow:
                self.audit.log.warning(
                    "downgrade.reverts_nothing",
                    env=self.env.name,
                    revision=revision,
                    message=(
                        f"{revision}'s downgrade() does nothing: it is marked reverted on "
                        f"{self.where}, but the changes its upgrade() made stay in the database"
                    ),
                )
            record = {
                "event": "migration.applied" if up else "migration.reverted",
                "revision": revision,
                "checksum": checksum,
                "from_revision": ",".join(step.source_revision_ids) or None,
                "to_revision": ",".join(step.destination_revision_ids) or None,
                "duration_ms": duration_ms,
                "reverted_nothing": True if hollow else None,
            }
            uncommitted.append((revision, record))

        with self.engine.connect() as connection:
            self._session_settings(connection)
            # a new transaction begins only after the previous one committed
            event.listen(connection, "begin", lambda _conn: committed())
            try:
                executor(connection, on_version_apply)
                committed()
            except Exception as exc:
                uncommitted.clear()  # its transaction failed, at COMMIT or before
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
