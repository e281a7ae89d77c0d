"""The migration lock: a PostgreSQL session advisory lock, or a file lock beside SQLite.

Both are context managers that poll until the timeout, call `on_wait(holder)` once when
they must wait, and raise LockTimeout naming the holder. They yield a `HeldLock`.

Fencing (PostgreSQL): a session advisory lock lives as long as its session, and a session
can end under a run (killed, idle timeout, network). The `Fence` names the backend that holds
the lock, so that each revision's commit can prove, inside its own transaction, that this
run still holds it (`FENCE_SQL`, used by the ledger insert). A file lock (SQLite) cannot be
lost that way: the kernel holds it for as long as the process lives, so it needs no fence.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from orchestrator.core.errors import LockTimeout
from orchestrator.core.logging import utc_now
from orchestrator.db.database import NO_IDLE_TIMEOUTS, no_idle_timeouts

DEFAULT_KEY = "alembic-orchestrator"
# Polled, not queued: a session blocked in pg_advisory_lock holds a snapshot, and CREATE INDEX
# CONCURRENTLY in the holder's run would wait for it (tested). A poll is a statement of a
# millisecond, and 25 ms between them keeps eight waiting runs' hand-over gaps short.
POLL_SECONDS = 0.025

Holder = dict[str, Any]


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory-lock id from a configurable string."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


# True while the backend `fence_pid` (the one that started at `fence_started`, not a later
# backend given the same pid) holds the advisory lock in this database. pg_locks is read live,
# never from a snapshot: a lock session that ended shows no granted lock.
FENCE_SQL = """EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = :fence_pid
      AND database::bigint = :fence_db AND classid::bigint = :fence_classid
      AND objid::bigint = :fence_objid AND objsubid = 1)
  AND (SELECT backend_start FROM pg_stat_get_activity(:fence_pid)) = :fence_started"""

_FENCE_CHECK = text(f"SELECT {FENCE_SQL}")


@dataclass(frozen=True)
class Fence:
    """The backend holding this run's advisory lock: what a commit proves is still there."""

    pid: int
    started: datetime
    database: int
    key: int

    def params(self) -> dict[str, Any]:
        return {
            "fence_pid": self.pid,
            "fence_started": self.started,
            "fence_db": self.database,
            "fence_classid": (self.key >> 32) & 0xFFFFFFFF,
            "fence_objid": self.key & 0xFFFFFFFF,
        }

    def held(self, connection: Any) -> bool:
        """One query: does the lock session still hold the lock? (False when unsure.)"""
        try:
            return bool(connection.execute(_FENCE_CHECK, self.params()).scalar())
        except DBAPIError:
            return False


@dataclass
class HeldLock:
    """What `migration_lock` yields: whom we waited for, and the fence (PostgreSQL)."""

    waited: Holder | None = None
    fence: Fence | None = None
    lost: bool = False  # the lock session was gone when we came to release it


@contextmanager
def migration_lock(
    engine: Engine,
    key: str,
    timeout: float,
    on_wait: Callable[[Holder], None],
    description: str,
) -> Iterator[HeldLock]:
    """Hold the lock for the whole block."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, lock_id(key), timeout, on_wait) as held:
            yield held
    else:
        database = make_url(engine.url).database
        if not database or database == ":memory:":
            yield HeldLock()
            return
        with _file_lock(Path(database + ".lock"), timeout, on_wait, description) as waited:
            yield HeldLock(waited)


# PostgreSQL shows another role's session only in part (pid, application, role; NULL address,
# backend_start and state) unless we have that role's privileges or pg_read_all_stats. A
# client backend always has a backend_start: NULL means hidden, not a local socket.
_HOLDER_SQL = text(
    """
    SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr,
           a.backend_start, a.state, a.usename AS role
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
            SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = ((:k >> 32) & 4294967295)::bigint::oid
      AND l.objid = (:k & 4294967295)::bigint::oid AND l.objsubid = 1
    """
)


@contextmanager
def _advisory_lock(
    engine: Engine, key: int, timeout: float, on_wait: Callable[[Holder], None]
) -> Iterator[HeldLock]:
    # Autocommit: the lock's session stays idle outside any transaction, so a revision
    # running CREATE INDEX CONCURRENTLY never waits on it.
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not event.contains(engine, "connect", no_idle_timeouts):  # a writer's did it
            connection.execute(text(NO_IDLE_TIMEOUTS))
        # who we are (the fence) and the first try, in one round trip
        me = connection.execute(
            text(
                "SELECT pid, backend_start, datid, pg_try_advisory_lock(:k) AS got"
                " FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            ),
            {"k": key},
        ).one()
        fence = Fence(pid=me.pid, started=me.backend_start, database=int(me.datid), key=key)
        waited = None
        deadline = time.monotonic() + timeout
        got = bool(me.got)
        while (
            not got
            and not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        ):
            # who holds it: asked when we start waiting and when we give up, not every poll
            if waited is None:
                waited = pg_lock_holder(connection, key)
                on_wait(waited)
            if time.monotonic() >= deadline:
                holder = pg_lock_holder(connection, key)
                raise LockTimeout(_timeout_message(timeout, holder), holder=holder)
            time.sleep(POLL_SECONDS)
        held = HeldLock(waited, fence)
        try:
            yield held
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except DBAPIError:  # the session ended, and the lock with it
                held.lost = True
    finally:
        with suppress(DBAPIError):
            connection.close()


def pg_lock_holder(connection: Any, key: int) -> Holder:
    row = connection.execute(_HOLDER_SQL, {"k": key}).first()
    if row is None:  # released between our try and this look
        return {"pid": None}
    if row.backend_start is None:  # another role's session (a second deploy role): hidden
        return {
            "pid": row.pid,
            "application_name": row.application_name,
            "role": row.role,
            "client_addr": None,
            "since": None,
            "state": None,
            "hidden": True,
        }
    return {
        "pid": row.pid,
        "application_name": row.application_name,
        "client_addr": row.client_addr or "local socket",
        "since": row.backend_start.isoformat(),
        "state": row.state,
    }


@contextmanager
def _file_lock(
    path: Path, timeout: float, on_wait: Callable[[Holder], None], description: str
) -> Iterator[Holder | None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_file_holder(path)
                if waited is None:
                    waited = holder
                    on_wait(holder)
                if time.monotonic() >= deadline:
                    raise LockTimeout(_timeout_message(timeout, holder), holder=holder) from None
                time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{description}\n{utc_now()}\n".encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)  # the kernel drops the flock if we die: no stale lock


def _read_file_holder(path: Path) -> Holder:
    try:
        pid, description, since = (path.read_text().splitlines() + ["", "", ""])[:3]
    except OSError:
        return {"pid": None}
    return {
        "pid": int(pid) if pid.isdigit() else None,
        "application_name": description or None,
        "client_addr": "this machine",
        "since": since or None,
    }


def describe_holder(holder: Holder) -> str:
    if not holder.get("pid"):
        return "a session that has since released it"
    parts = [f"pid {holder['pid']}"]
    if holder.get("application_name"):
        parts.append(f"application {holder['application_name']!r}")
    if holder.get("client_addr"):
        parts.append(f"from {holder['client_addr']}")
    if holder.get("since"):
        parts.append(f"connected since {holder['since']}")
    if holder.get("hidden"):
        parts.append(
            f"role {holder.get('role')!r} (its address and start are hidden from this role;"
            " pg_read_all_stats shows them)"
        )
    return ", ".join(parts)


def _timeout_message(timeout: float, holder: Holder) -> str:
    return (
        f"The migration lock was not acquired within {timeout:g}s: it is held by "
        f"{describe_holder(holder)}. Wait for that run to finish, or raise --lock-timeout."
    )
