"""One run on one database: lock, audit trail, ledger rows and session settings around the
revisions it applies; and which runs are still alive."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.config import Target
from orchestrator.core.errors import (
    AuditUnavailable,
    Cancelled,
    LockTimeout,
    MigrationFailed,
    OrchestratorError,
    Refused,
    UsageError,
)
from orchestrator.core.logging import utc_now
from orchestrator.core.planning import Step
from orchestrator.core.results import RunResult
from orchestrator.db.database import (
    close_ahead,
    describe_error,
    has_table,
    is_postgresql,
    make_engine,
    memoise_reads,
    memoise_tables,
    open_ahead,
    safe_url,
    version_table_known,
)
from orchestrator.db.locks import DEFAULT_KEY, Fence, migration_lock
from orchestrator.evidence import ledger
from orchestrator.evidence.audit import FINAL_WAIT, AuditTrail
from orchestrator.evidence.keys import Signer
from orchestrator.running import connection_hooks, dead_runs, read_ahead, run_end, schema_record
from orchestrator.running.app import App, new_run_id
from orchestrator.running.apply import Applying
from orchestrator.running.evidence_run import RunEvidence
from orchestrator.running.liveness import application_name, live_run_ids
from orchestrator.running.predecessor import DbState, open_predecessor_ahead, read_state

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
        self.environment = app.environment(target.env)
        self.env = self.environment.config
        self.run_id = new_run_id()
        self.lock_timeout = self.env.lock.timeout if lock_timeout is None else lock_timeout
        self.lock_key = self.env.lock.key or DEFAULT_KEY
        name = application_name(self.env.name, self.run_id, app.actor)
        self.engine: Engine = make_engine(target.url, name)
        # one catalog listing serves every "is this table there?" until tables may have come
        self.forget_tables = memoise_tables(self.engine)
        version_table_known(self.engine)  # Alembic's look for its table: from that listing
        self.read_ahead = memoise_reads(self.engine)  # under the lock: read_ahead.under_lock
        self.per_run = self.env.transaction == "per-run"
        if self.per_run and self.engine.dialect.name != "postgresql":
            self.engine.dispose()
            raise UsageError(
                f"{self.env.name} sets `transaction: per-run`, but {self.where} is not a "
                f"PostgreSQL database ({self.engine.dialect.name}): one transaction around "
                "a whole run needs transactional DDL that a failure can roll back entirely. "
                "Remove the setting (one transaction per revision, the default) for this "
                "environment."
            )
        self.fence: Fence | None = None
        self.waited = False  # for the lock: another run held it when this one asked
        connection_hooks.watch(self.engine)
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
        # per revision, what its runs on the predecessor read (one mapping per database):
        # set by the caller once the gate passed; a revision reading otherwise is refused
        self.expected_reads: dict[str, list[dict[str, str]]] = {}
        self.schema_fingerprint: str | None = None
        self.schema_heads: tuple[str, ...] | None = None  # where record_schema read them
        self.versioned = False  # the last read found a version: worth reading it ahead
        self.started = False
        self.started_at = time.monotonic()
        self.signer: Signer | None = None  # loaded by start(), before anything is written
        self.evidence: RunEvidence | None = None  # its evidence chain, where the env signs
        self.may_start_chain = False  # keys adopt/repair: evidence missing is theirs to record
        self.repairing = False  # keys repair: a broken chain is what it records, not a refusal
        self.closed = False
        self.result: RunResult | None = None

    @property
    def where(self) -> str:
        return (
            self.env.name
            if self.target.name == self.env.name
            else f"{self.env.name}/{self.target.name}"
        )

    def close(self) -> None:
        """Always called, from a `finally`: a run that started and is leaving on an exception
        records its own end, so that only a dead run is ever left open. Then the records still
        pending and (where the environment signs) a signed checkpoint over the audit chain's
        head. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        exc = sys.exc_info()[1]
        if exc is not None and self.started and not self.audit.ended:
            if isinstance(exc, Cancelled):
                self.audit.emit(
                    "run.interrupted",
                    outcome="interrupted",
                    reason=exc.message,
                    applied=self.applied,
                    duration_ms=self.elapsed_ms(),
                )
            else:
                error = (
                    exc.message
                    if isinstance(exc, OrchestratorError)
                    else f"unexpected error: {type(exc).__name__}: {describe_error(exc)}"
                )
                self.audit.emit(
                    "run.failed" if not isinstance(exc, Refused) else "run.refused",
                    outcome="refused" if isinstance(exc, Refused) else "failed",
                    error=error,
                    duration_ms=self.elapsed_ms(),
                )
        if self.started and self.signer is not None:
            run_end.sign_end(self, exc)  # with the records still pending, in one transaction
        else:
            self.audit.flush(wait=FINAL_WAIT)  # those a busy SQLite database could not take
        if self.result is not None:
            self.result.audit_head = self.audit.head
            if self.evidence is not None:
                self.result.evidence_head = self.evidence.head()
        close_ahead(self.engine)
        self.engine.dispose()

    def fail_details(self, exc: OrchestratorError) -> None:
        """Close, and put the run's id and audit head on the error that ends it."""
        self.close()
        exc.details.setdefault("run_id", self.run_id)
        exc.details.setdefault("audit_head", self.audit.head)

    def verify_evidence(self) -> None:
        """Under the lock, before any evidence is written: the chain and the audit rows
        since the last end entry verify, or the run refuses (exit 3)."""
        if self.evidence is None:
            return
        try:
            # outside a transaction on PostgreSQL: under READ COMMITTED one would give these
            # reads no common snapshot, only its BEGIN and COMMIT round trips
            with self.reading() as connection:
                self.evidence.verify(
                    connection,
                    live_run_ids(connection),
                    allow_missing=self.may_start_chain,
                    repairing=self.repairing,
                )
        except Refused as exc:
            self.refuse(exc.message)
        finally:
            for name in read_ahead.EVIDENCE:  # read for this check alone
                self.read_ahead.pop(name, None)

    def witness(self, states: Sequence[Any]) -> None:
        """The gate passed on these predecessor states: their chain heads go into this run's
        signed end entry (freshness: a later rollback below them is caught)."""
        if self.evidence is not None:
            self.evidence.witnessed = [
                {**t.head, "at": utc_now(), "snapshot": t.snapshot}
                for t in states
                if getattr(t, "head", None)
            ]

    def evidence_moved(self, connection: Connection, reason: str) -> None:
        """`keys adopt` on an install with no chain yet: its first entry."""
        assert self.evidence is not None
        self.evidence.moved(connection, reason, self.app.actor, utc_now())

    def evidence_repair(self, connection: Connection, reason: str) -> str | None:
        """`keys repair`: a signed entry stating what is broken; None when nothing is."""
        assert self.evidence is not None
        return self.evidence.repair(connection, reason, self.app.actor, utc_now())

    def record_row(
        self, connection: Connection, row: Mapping[str, Any], fence: Fence | None = None
    ) -> bool:
        """One ledger row and, where the env signs, its chain entry, in the caller's
        transaction; False: the fence did not hold (nothing written, roll back)."""
        if self.evidence is not None and not self.evidence.record(connection, row, fence):
            return False
        return ledger.record_revision(connection, row, fence=fence)

    @property
    def key(self) -> Any:
        return self.signer.key if self.signer is not None else None

    # -- events ----------------------------------------------------------------------------

    def open_ahead(self, predecessor: bool) -> None:
        """A run with revisions to apply: its migration connection and (where the gate will
        read it) the predecessor's, opened in threads while it reads and judges."""
        open_ahead(self.engine)
        if predecessor:
            open_predecessor_ahead(self.app, self.env)

    def start(self, **fields: Any) -> None:
        # fail closed: a signing environment without its key writes nothing, not even this
        self.signer = self.environment.signer
        if self.signer is not None:
            keys = self.environment.public_keys or ()
            self.evidence = RunEvidence(
                self.signer.key, keys, self.env.name, self.target.name, self.run_id
            )
        self.started = True
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
        # Fail closed: no run changes a schema without its start on record. A SQLite database
        # busy with another run's revision is not a failure yet: `locked` checks again.
        self._require_audit(wait=None)

    def _require_audit(self, wait: float | None) -> None:
        problem = self.audit.durable(wait)
        if problem:
            message = (
                f"The audit trail of {self.where} cannot be written ({problem}): no run changes "
                "a schema unless its start is on record, so nothing was changed. Let this "
                "database role create and insert into orchestrator_audit and "
                "orchestrator_ledger, then run again."
            )
            self.audit.emit("run.failed", outcome="failed", error=message)
            raise AuditUnavailable(message)

    def refuse(self, message: str, steps: Sequence[Step] | None = None, **fields: Any) -> None:
        if steps is not None:
            blocked = [{"revision": s.revision, "reason": s.reason} for s in steps if s.blocked]
            self.audit.emit("gate.refused", outcome="refused", blocked=blocked, **fields)
        self.audit.emit("run.refused", outcome="refused", error=message, **fields)
        raise Refused(message)

    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started_at) * 1000)

    def finish(self, **fields: Any) -> RunResult:
        if self.applied and "schema_fingerprint" not in fields:  # the schema changed: record it
            fields["schema_fingerprint"] = self.record_schema()
        fields.setdefault("env_py", self.app.project.env_py_checksum)  # what the run ran with
        self.audit.emit(
            "run.succeeded",
            outcome="succeeded",
            applied=self.applied,
            duration_ms=self.elapsed_ms(),
            **fields,
        )
        self.result = RunResult(
            self.env.name, self.target.name, self.run_id, "succeeded", self.applied
        )
        return self.result

    @contextmanager
    def locked(self) -> Iterator[None]:
        def on_wait(holder: dict[str, Any]) -> None:
            self.audit.emit("lock.waiting", lock_key=self.lock_key, holder=holder)

        held = None
        try:
            with migration_lock(
                self.engine,
                self.lock_key,
                self.lock_timeout,
                on_wait,
                application_name(self.env.name, self.run_id, self.app.actor),
            ) as held:
                self.fence = held.fence
                self.waited = held.waited is not None
                self.forget_tables()  # another run may have created some while we waited
                try:
                    self.audit.emit("lock.acquired", lock_key=self.lock_key)
                    self._require_audit(wait=FINAL_WAIT)
                    self._wait_for_commits_in_flight()
                    self.verify_evidence()
                    yield
                finally:
                    self.fence = None
                    self.read_ahead.clear()
        except LockTimeout as exc:
            self.audit.emit(
                "run.failed",
                outcome="failed",
                error=exc.message,
                holder=exc.details.get("holder"),
                lock_key=self.lock_key,
            )
            raise
        finally:
            if held is not None:
                lost = held.lost
                # where the run signs, written with its end entry (run_end: one transaction)
                self.audit.emit(
                    "lock.lost" if lost else "lock.released",
                    lock_key=self.lock_key,
                    defer=self.signer is not None,
                )

    def _wait_for_commits_in_flight(self) -> None:
        """A run whose lock session ended may be committing a revision that passed its fence
        just before: its ledger insert holds the table in ROW EXCLUSIVE mode until it commits.
        Taking SHARE mode once waits for that commit, so what we read next includes it; a
        fenced insert that starts after this sees the lock held by us, and fails."""
        if self.fence is None:
            return
        lock = f"LOCK TABLE {ledger.LEDGER_TABLE} IN SHARE MODE"
        with self.engine.connect() as connection:
            # the audit trail just wrote: our tables are there, and one round trip does it,
            # with the reads of the steps that follow
            if self.audit.tables_ready and self._read_ahead(connection, lock):
                return
            if has_table(connection, ledger.LEDGER_TABLE):
                connection.execute(text(lock))
            connection.rollback()

    def _read_ahead(self, connection: Connection, lock: str) -> bool:
        return read_ahead.under_lock(
            connection,
            self.read_ahead,
            lock,
            evidence=self.evidence is not None,
            migrate=self.command == "migrate",
            versioned=self.versioned,
            drift=self.env.policy.schema_drift != "off",
            signed=self.app.public_keys(self.env.name) is not None,
            schemas=self.env.schemas,
        )

    def record_schema(self) -> str | None:
        """Under the lock, after a run that changed the database: record the schema it left
        (running/schema_record.py); its fingerprint, or None where it could not."""
        return schema_record.record_schema(self)

    # -- state under the lock ----------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A look at the target: on PostgreSQL outside any transaction (under READ COMMITTED
        each statement reads what is committed anyway; no BEGIN and ROLLBACK round trips), on
        SQLite in a read transaction, which waits for no write lock."""
        with self.engine.connect() as connection:
            if is_postgresql(connection):
                connection.execution_options(isolation_level="AUTOCOMMIT")
            else:
                connection.execution_options(read_only=True)
            yield connection

    def read(self) -> DbState:
        try:
            with self.reading() as connection:
                state = read_state(connection, self.app.graph, self.where)
        except SQLAlchemyError as exc:
            raise MigrationFailed(f"Cannot read {self.where}: {describe_error(exc)}") from None
        self.versioned = bool(state.heads)
        return state

    def close_dead_runs(self) -> list[str]:
        """Under the lock: runs that started and never ended are dead; record them."""
        return dead_runs.close_dead_runs(self)

    # -- applying ----------------------------------------------------------------------------

    def apply(self, revisions: Sequence[str], direction: str, executor: Executor) -> None:
        """Run `executor` over `revisions`, each recorded as it commits (running/apply.py)."""
        Applying(self, revisions).apply(executor)

    def where_now(self) -> str:
        """The database's revision as it is now, for a message."""
        try:
            return ", ".join(self.read().heads) or "base"
        except OrchestratorError:
            return "a revision we could not read back"
