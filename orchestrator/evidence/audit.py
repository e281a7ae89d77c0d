"""Audit events: one record, three destinations (stderr via structlog, the target
database's append-only table, and an optional JSON-lines file)."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine

from orchestrator.core.logging import utc_now
from orchestrator.core.secrets import redact_value
from orchestrator.db.database import describe_error
from orchestrator.evidence import ledger

_LEVELS = {
    "run.failed": "error",
    "migration.failed": "error",
    "run.refused": "warning",
    "gate.refused": "warning",
    "lock.waiting": "warning",
    "run.interrupted": "warning",
    "schema.drifted": "warning",
    "schema.diverged": "warning",
    "env_py.differs": "warning",
    "schema.not_recorded": "warning",
}


def detect_actor(configured: str | None, environ: dict[str, str] | None = None) -> str:
    """ORCHESTRATOR_ACTOR, else the CI's user variables, else user@host."""
    environ = dict(os.environ) if environ is None else environ
    if configured:
        return configured
    for variable in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_USER_ID", "BUILD_USER"):
        if environ.get(variable):
            return environ[variable]
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def detect_git_sha(project_dir: Path, environ: dict[str, str] | None = None) -> str | None:
    environ = dict(os.environ) if environ is None else environ
    for variable in ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT"):
        if environ.get(variable):
            return environ[variable]
    done = _git(project_dir, "rev-parse", "HEAD")
    return (done.stdout.strip() or None) if done is not None and done.returncode == 0 else None


def detect_git_dirty(project_dir: Path) -> bool:
    """Whether what runs differs from the commit: a tracked file under the project changed,
    or a Python file (a revision, a module it imports) is not committed at all."""
    done = _git(project_dir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", ".")
    if done is None or done.returncode != 0:
        return False  # not a git checkout: no sha is claimed either
    return is_dirty(done.stdout)


def is_dirty(porcelain_z: str) -> bool:
    """Pure: `git status --porcelain=v1 -z` output -> dirty? Untracked files count only when
    they are Python (a database file or a log in the project directory is no change)."""
    entries = porcelain_z.split("\0")
    skip = False
    for entry in entries:
        if skip or len(entry) < 4:  # a rename's second path, or the trailing empty entry
            skip = False
            continue
        status, path = entry[:2], entry[3:]
        skip = "R" in status or "C" in status
        if status != "??" or path.endswith(".py"):
            return True
    return False


def _git(project_dir: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


NARROW_ACTOR = 256  # what tables of earlier versions hold
SQLITE_BUSY_WAIT = 0.2  # seconds an event waits for a SQLite database another run is migrating
FINAL_WAIT = 2.0  # at the end of a run, for the records still pending


def _database_busy(exc: BaseException) -> bool:
    return "database is locked" in str(getattr(exc, "orig", None) or exc)


class AuditTrail:
    """Emits the events of one run on one database."""

    def __init__(
        self,
        *,
        env: str,
        run_id: str,
        actor: str,
        engine: Engine | None,
        file: Path | None,
        **common: Any,
    ) -> None:
        self.env, self.run_id, self.actor = env, run_id, actor
        self.engine, self.file = engine, file
        self.common = {k: v for k, v in common.items() if v is not None}
        self.log = structlog.get_logger("orchestrator")
        self._pending: list[dict[str, Any]] = []
        self.tables_ready = False
        self.ended = False  # a terminal event (run.succeeded, ...) was emitted
        self.write_error: str | None = None  # why records could not be written, if they could not
        self.head: str | None = None  # hash of the last row this trail wrote

    def emit(
        self, event: str, connection: Connection | None = None, defer: bool = False, **fields: Any
    ) -> dict:
        """Record `event`. With `connection`, the row joins the caller's transaction; with
        `defer`, it joins the next write (one transaction for a run's many revisions)."""
        record: dict[str, Any] = {
            "timestamp": utc_now(),
            "event": event,
            "run_id": self.run_id,
            "env": self.env,
            "actor": self.actor,
            **self.common,
            **{k: v for k, v in fields.items() if v is not None},
        }
        record = redact_value(record)
        if event in ledger.TERMINAL_EVENTS:
            self.ended = True
        if connection is not None:
            written = ledger.append_audit(connection, [record])
            self.head = written["hash"] if written else self.head
        elif self.engine is not None:
            self._pending.append(record)
            if not defer:
                self.flush(wait=SQLITE_BUSY_WAIT)
        if self.file is not None:
            self._append_file(record)
        getattr(self.log, _LEVELS.get(event, "info"))(**record)
        return record

    def flush(self, wait: float) -> None:
        """Write the records not yet in the database, oldest first.

        SQLite has one writer at a time, and a run that is migrating holds the database for a
        whole revision. A run waiting for the migration lock must not block behind it (its
        --lock-timeout would mean nothing), so on SQLite it waits at most `wait` seconds for
        the database and otherwise keeps its records for the next event or the end of the run.
        """
        if not self._pending or self.engine is None:
            return
        try:
            with self.engine.connect() as connection:
                sqlite = connection.dialect.name == "sqlite"
                if sqlite:  # raw: a statement through SQLAlchemy would begin the transaction first
                    connection.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                        f"PRAGMA busy_timeout = {int(wait * 1000)}"
                    )
                try:
                    # where our tables are there (every run but a database's first): the
                    # check and the append in one round trip
                    written = None
                    if not self.tables_ready and len(self.actor) <= NARROW_ACTOR:
                        written = ledger.append_audit_if_ready(connection, self._pending)
                    if written is None:
                        written = self._set_up_and_append(connection, sqlite)
                    self.tables_ready = True
                    self.head = written["hash"] if written else self.head
                finally:
                    if sqlite:
                        connection.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                            "PRAGMA busy_timeout = 30000"
                        )
            self._pending.clear()
        except Exception as exc:  # the run goes on; the failure to record is reported
            if _database_busy(exc) and wait < FINAL_WAIT:
                return  # kept for the next try
            self.write_error = describe_error(exc)
            self.log.error(
                "audit.persist_failed",
                error=str(exc).splitlines()[0],
                of=[r["event"] for r in self._pending],
            )
            self._pending.clear()

    def _set_up_and_append(self, connection: Connection, sqlite: bool) -> dict[str, Any] | None:
        if not self.tables_ready and len(self.actor) > NARROW_ACTOR:
            with connection.begin():  # its own transaction: see widen_actor
                ledger.widen_actor(connection)
        if not self.tables_ready:
            with connection.begin():
                ledger.ensure_tables(connection)
        if sqlite:
            with connection.begin():
                return ledger.append_audit(connection, self._pending)
        # one round trip where the driver can (ledger.append_audit)
        written = ledger.append_audit(connection, self._pending)
        if connection.in_transaction():
            connection.commit()
        return written

    @property
    def pending(self) -> list[dict[str, Any]]:
        """The records not yet written, oldest first (a copy)."""
        return list(self._pending)

    def written_with(self, records: Sequence[Mapping[str, Any]], last: Mapping[str, Any]) -> None:
        """`records` (the first of `pending`) were written in the caller's transaction,
        which committed; `last`: the last of them as written."""
        del self._pending[: len(records)]
        self.head = last["hash"]

    def durable(self, wait: float | None) -> str | None:
        """Flush; why the records so far are not in the database, or None when they are.
        With `wait` None, a busy SQLite database is not a failure (the records wait)."""
        self.flush(wait=SQLITE_BUSY_WAIT if wait is None else wait)
        if self.write_error is not None:
            return self.write_error
        if self._pending and wait is not None:
            return "the database stayed busy"
        return None

    def _append_file(self, record: dict[str, Any]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        line = json.dumps(record, default=str) + "\n"
        # one write() on an O_APPEND descriptor: lines of concurrent runs never interleave
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)  # type: ignore[arg-type]
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
