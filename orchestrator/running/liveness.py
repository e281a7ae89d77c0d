"""Which runs are alive: the sessions PostgreSQL shows, else the process on this machine; and
the name a run's sessions carry, which is how they are found."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, text

from orchestrator.db.database import is_postgresql


def application_name(env: str, run_id: str, actor: str) -> str:
    """The run's sessions' name. The run id comes first: PostgreSQL keeps 63 bytes, and a
    long environment name or actor must never cut off what `status` looks for."""
    return f"orchestrator run={run_id} {env} {actor}"


_RUN_IN_APP = re.compile(r"run=(\w+)")


def live_run_ids(connection: Connection) -> set[str] | None:
    """Run ids with a live session (PostgreSQL); None where the database cannot tell."""
    if not is_postgresql(connection):
        return None
    return live_of(name for (name,) in connection.execute(text(SESSIONS_SQL)))


SESSIONS_SQL = (
    "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'orchestrator%'"
)


def live_of(names: Iterable[str | None]) -> set[str]:
    """Pure: the run ids in SESSIONS_SQL's application names (read in a batch, too)."""
    return {m.group(1) for name in names if (m := _RUN_IN_APP.search(name or ""))}


def run_alive(run: Mapping[str, Any], live: set[str] | None) -> bool:
    if live is not None:
        return run["run_id"] in live
    pid = run.get("pid")
    # another machine, or no process id (a hand-written row may hold anything): we cannot
    # tell, assume alive
    if run.get("host") != socket.gethostname() or type(pid) is not int or not 0 < pid < 2**31:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
