"""One application of revisions within a run: Alembic's executor with our hook in each
revision's transaction, its ledger row (fenced, riding with the COMMIT), its audit events once
it committed, and what a failure, a lost lock or a cancel leaves behind."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.errors import (
    Cancelled,
    LockLost,
    MigrationFailed,
    Refused,
    UsageError,
)
from orchestrator.core.failures import failure_message
from orchestrator.core.logging import utc_now
from orchestrator.core.planning import reads_refusal
from orchestrator.db.database import (
    VERSION_TABLE,
    commit_with,
    describe_error,
    rides_with_commit,
)
from orchestrator.db.locks import Fence
from orchestrator.evidence import ledger
from orchestrator.migrations import observe
from orchestrator.migrations.revisions import reverts_nothing
from orchestrator.running import cancel, connection_hooks
from orchestrator.running.connection_hooks import (
    AUTOCOMMITTED,
    BETWEEN,
    FENCE,
    FENCED,
    VERSION_RIDES,
)
from orchestrator.running.progress import RevisionTicker

if TYPE_CHECKING:
    from orchestrator.running.run import Executor, TargetRun


class Applying:
    """`revisions` applied on `run`'s database (TargetRun.apply), under its lock."""

    def __init__(self, run: TargetRun, revisions: Sequence[str]) -> None:
        self.run, self.revisions = run, revisions
        self._unrecorded = len(revisions)  # ledger rows still to come
        self._rows_to_commit: list[dict[str, Any]] = []  # per-run: the rows of its COMMIT

    def apply(self, executor: Executor) -> None:
        """Run `executor` (one transaction per revision) with our hook in each transaction.

        The hook writes the revision's ledger row inside its transaction. A revision counts
        as applied, and its audit event is queued, only once that transaction committed:
        when the next one begins, or when the executor returns. A revision can still fail at
        COMMIT (a deferred constraint), after the hook ran.
        """
        graph, revisions = self.run.app.graph, self.revisions
        self.run.read_ahead.clear()  # what the revisions change is read again after them
        if self.run.per_run:
            self._no_autocommit_blocks(revisions)
        last = [time.monotonic()]
        fence = self.run.fence
        ticker = RevisionTicker(self.run, revisions, self.run.app.settings.progress_seconds)
        uncommitted: list[tuple[str, dict[str, Any]]] = []

        def committed() -> None:
            if not uncommitted:
                return
            for revision, record in uncommitted:
                self.run.audit.emit(
                    record.pop("event"),
                    defer=True,  # the ledger row is the in-transaction record; this waits
                    # for the next write, so a run of many revisions writes its audit rows once
                    **record,
                )
                self.run.applied.append(revision)
            uncommitted.clear()
            ticker.next(len(self.run.applied))  # the next revision starts now

        def on_version_apply(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
            if VERSION_RIDES in ctx.connection.info:  # env.py may name its own version table
                ctx.connection.info[VERSION_RIDES] = (ctx.version_table, ctx.version_table_schema)
            if step.is_stamp:
                uncommitted.extend(self._record_stamp(ctx.connection, step))
                return
            revision = step.up_revision_id
            checksum = graph.get(revision).checksum if revision in graph else ""
            now = time.monotonic()
            duration_ms = round((now - last[0]) * 1000)
            last[0] = now
            up = step.is_upgrade
            reads = observe.take()  # the project files its code opened while it ran
            refusal = self._reads_refusal(revision, reads) if up else None
            if refusal is not None:  # raised before its COMMIT: the revision rolls back
                raise Refused(refusal, revision=revision)
            self._record(ctx.connection, revision, checksum, "up" if up else "down", reads)
            # a downgrade() that is `pass`: marked undone, its changes stay (said, not hidden)
            hollow = not up and revision in graph and reverts_nothing(graph.get(revision).path)
            if hollow:
                self.run.audit.log.warning(
                    "downgrade.reverts_nothing",
                    env=self.run.env.name,
                    revision=revision,
                    message=(
                        f"{revision}'s downgrade() does nothing: it is marked reverted on "
                        f"{self.run.where}, but the changes its upgrade() made stay in the database"
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
                "reads": reads or None,
            }
            uncommitted.append((revision, record))
            if self.run.per_run:  # no COMMIT until the end: progress moves as each one has run
                ticker.next(len(uncommitted))

        with self.run.engine.connect() as connection, ticker:
            connection_hooks.session_settings(connection, self.run.env.session)
            connection.info[FENCE] = fence
            connection.info[FENCED] = False
            connection.info[AUTOCOMMITTED] = False
            connection.info[BETWEEN] = True
            if fence is not None and not self.run.per_run and rides_with_commit(connection):
                connection.info[VERSION_RIDES] = (VERSION_TABLE, None)
            # a new transaction begins only after the previous one committed
            event.listen(connection, "begin", lambda _conn: committed())
            try:
                with cancel.revisions_running(), self._watch_reads():
                    if self.run.per_run:  # one transaction: every revision and ledger row, or none
                        with connection.begin():
                            executor(connection, on_version_apply)
                            if self.run.evidence is not None:
                                self.run.evidence.record_all(connection, self._rows_to_commit)
                            ledger.record_rows(connection, self._rows_to_commit)
                            self._rows_to_commit.clear()
                    else:
                        executor(connection, on_version_apply)
                committed()
            except Cancelled:
                committed()  # raised as the next transaction began: the previous one committed
                raise cancel.cancelled(self._done()) from None
            except cancel.StatementCancelled:  # a second Ctrl-C: its statement was cancelled
                uncommitted.clear()  # and its transaction rolled back
                stopped = " (its running statement cancelled)" + self._done()
                raise cancel.cancelled(stopped) from None
            except UsageError:  # a revision file that cannot be imported: nothing ran
                raise
            except Refused as exc:  # a file a revision read differs from the predecessor's
                uncommitted.clear()
                self.run.audit.emit(
                    "run.refused", outcome="refused", error=exc.message, applied=self.run.applied
                )
                raise
            except Exception as exc:
                failed: str | None
                if self.run.per_run:  # the ones that ran rolled back with it: the next one failed
                    failed = revisions[min(len(uncommitted), len(revisions) - 1)]
                else:
                    failed = next((r for r in revisions if r not in self.run.applied), None)
                uncommitted.clear()  # its transaction failed, at COMMIT or before
                lost = isinstance(exc, LockLost) or (
                    fence is not None and not self._fence_holds(fence)
                )
                autocommitted = bool(connection.info.get(AUTOCOMMITTED))
                self._fail(failed, exc, lost, autocommitted)
            finally:
                self.run.forget_tables()  # the revisions (and Alembic) may have created tables
                for key in (FENCE, FENCED, AUTOCOMMITTED, BETWEEN, VERSION_RIDES):
                    connection.info.pop(key, None)
        if cancel.requested():  # came during the last revision: stop here all the same
            cancel.check(self._done())  # (the message reads the database: only when needed)

    def _watch_reads(self) -> Any:
        """Observe the project files each revision opens (not the revision files)."""
        project = self.run.app.project
        return observe.watching(self.run.app.settings.project_dir, project.versions_dirs)

    def _reads_refusal(self, revision: str, reads: Mapping[str, str] | None) -> str | None:
        expected = self.run.expected_reads.get(revision)
        if reads is None or expected is None or self.run.env.promotes_from is None:
            return None
        return reads_refusal(revision, self.run.env.promotes_from, expected, reads)

    def _done(self) -> str:
        return (
            f" between revisions on {self.run.where}: {len(self.run.applied)} revision(s) of "
            f"this run committed ({', '.join(self.run.applied) or 'none'}), none half-way; "
            f"{self.run.where} is at {self.run.where_now()}. Run again to go on"
        )

    def _no_autocommit_blocks(self, revisions: Sequence[str]) -> None:
        """`transaction: per-run` cannot hold a revision with an autocommit block: Alembic
        commits the run's transaction to enter it. Refused before anything runs."""
        graph = self.run.app.graph
        with_block = [
            r
            for r in revisions
            if r in graph and "autocommit_block" in Path(graph.get(r).path).read_text()
        ]
        if with_block:
            raise UsageError(
                f"{', '.join(with_block)} use an autocommit block (CREATE INDEX CONCURRENTLY "
                f"and the like), which cannot run inside the single transaction that "
                f"`transaction: per-run` gives {self.run.env.name}'s runs: nothing was run. Use "
                "`transaction: per-revision` (the default) for this environment."
            )

    def _record(
        self,
        connection: Connection,
        revision: str,
        checksum: str,
        direction: str,
        reads: Mapping[str, str] | None = None,
    ) -> None:
        """The ledger row of one revision, in its transaction; fenced on PostgreSQL. Under
        `transaction: per-run` the rows are not fenced one by one: the one COMMIT is, by
        `_fence_commit`. Each row's check would read pg_locks while this transaction holds
        a lock per table it created, thousands by the end: quadratic in the run's length.
        They are written together just before that COMMIT's fence check, and hold the
        ledger in ROW EXCLUSIVE mode until the COMMIT, so the next lock holder still waits
        for it (`_wait_for_commits_in_flight`)."""
        row = ledger.revision_row(
            revision=revision,
            checksum=checksum,
            direction=direction,
            run_id=self.run.run_id,
            env=self.run.env.name,
            actor=self.run.app.actor,
            at=utc_now(),
            key=self.run.key,
            target=self.run.target.name,
            reads=reads,
        )
        self._unrecorded -= 1
        if self.run.per_run:  # written in one round trip just before that COMMIT, not 1 per row
            self._rows_to_commit.append(row)
        elif self.run.fence is not None and rides_with_commit(connection):
            self._ride_with_commit(connection, row, self.run.fence)
        elif not self.run.record_row(connection, row, fence=self.run.fence):
            raise LockLost(f"the migration lock was lost before {revision} could commit")
        connection.info[FENCED] = not self.run.per_run and self.run.fence is not None
        connection.info[AUTOCOMMITTED] = False
        connection.info[BETWEEN] = True

    def _ride_with_commit(self, connection: Connection, row: dict[str, Any], fence: Fence) -> None:
        """The ledger row, and its chain entry where the env signs, sent with the revision's
        COMMIT, which opens the next revision's transaction too: one round trip, not four.
        Either fails, so the COMMIT never runs, where the fence does not hold."""
        statements = [ledger.fenced_at_commit(row, fence)]
        recover = None
        if self.run.evidence is not None:
            entry, recover_entry = self.run.evidence.at_commit(row, fence)
            statements = [*entry, *statements]

            def recover(raw: Any) -> list[tuple[str, Mapping[str, Any]]]:
                return [*recover_entry(raw), ledger.fenced_at_commit(row, fence)]

        commit_with(connection, statements, begin_next=self._unrecorded > 0, recover=recover)

    def _record_stamp(self, connection: Connection, step: Any) -> list[tuple[str, dict[str, Any]]]:
        """`alembic stamp`: a `stamped` ledger row per revision it leaves as a head; the
        audit events to emit once the stamp committed."""
        events = []
        for revision in step.destination_revision_ids or ("base",):
            node = self.run.app.graph.get(revision) if revision in self.run.app.graph else None
            checksum = node.checksum if node else ""
            self._record(connection, revision, checksum, "stamped")
            record = {
                "event": "migration.stamped",
                "revision": revision,
                "checksum": checksum or None,
                "from_revision": ",".join(step.source_revision_ids) or None,
            }
            events.append((revision, record))
        return events

    def _fence_holds(self, fence: Fence) -> bool:
        try:
            with self.run.engine.connect() as connection:
                return fence.held(connection)
        except SQLAlchemyError:
            return False

    def _fail(
        self, failed: str | None, exc: BaseException, lost: bool, autocommitted: bool
    ) -> None:
        error = describe_error(exc)
        self.run.audit.emit(
            "migration.failed",
            outcome="failed",
            revision=failed,
            error=error,
            lock_lost=lost or None,
            autocommit_block=autocommitted or None,
        )
        message = failure_message(
            where=self.run.where,
            failed=failed,
            error=error,
            lost=lost,
            per_run=self.run.per_run,
            autocommitted=autocommitted,
            applied=self.run.applied,
            now=self.run.where_now(),
        )
        self.run.audit.emit(
            "run.failed",
            outcome="failed",
            revision=failed,
            error=message,
            lock_lost=lost or None,
            duration_ms=self.run.elapsed_ms(),
        )
        raise (LockLost if lost else MigrationFailed)(message, revision=failed) from None
