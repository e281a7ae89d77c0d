"""The migration lock's primitives without PostgreSQL: the file lock beside a SQLite database
(held by a real second process), the holder's description, the timeout message."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from orchestrator.core.errors import LockTimeout
from orchestrator.db.locks import _read_file_holder, describe_holder, migration_lock

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, f"{os.getpid()}\\nheld by a test\\n2030-01-01T00:00:00Z\\n".encode(), 0)
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "dev.db"


@pytest.fixture
def holder(database: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the file lock of `database` until the test ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"{database}.lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_file_lock_times_out_naming_the_holder(
    database: Path, holder: subprocess.Popen[str]
) -> None:
    engine = create_engine(f"sqlite:///{database}")
    waits: list[dict[str, Any]] = []
    with (
        pytest.raises(LockTimeout) as info,
        migration_lock(engine, "k", 0.3, waits.append, "me"),
    ):
        pytest.fail("acquired a lock another process holds")
    expected = {
        "pid": holder.pid,
        "application_name": "held by a test",
        "client_addr": "this machine",
        "since": "2030-01-01T00:00:00Z",
    }
    assert waits == [expected]  # told once that we wait, and for whom
    assert info.value.details["holder"] == expected
    assert info.value.exit_code == 4
    assert info.value.message == (
        "The migration lock was not acquired within 0.3s: it is held by "
        f"pid {holder.pid}, application 'held by a test', from this machine, connected since "
        "2030-01-01T00:00:00Z. Wait for that run to finish, or raise --lock-timeout."
    )


def test_file_lock_is_taken_once_free_and_records_us_while_held(
    database: Path, holder: subprocess.Popen[str]
) -> None:
    engine = create_engine(f"sqlite:///{database}")
    holder.kill()
    holder.wait(timeout=10)  # the kernel dropped its lock
    waits: list[dict[str, Any]] = []
    lock_file = Path(f"{database}.lock")
    with migration_lock(engine, "k", 5, waits.append, "orchestrator dev run=abc") as held:
        assert held.waited is None and held.fence is None and waits == []
        pid, description, since = lock_file.read_text().splitlines()
        assert (int(pid), description) == (os.getpid(), "orchestrator dev run=abc")
        assert since.endswith("Z")
        other = subprocess.run(  # another process cannot take it now
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys\n"
                "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                "except BlockingIOError:\n    sys.exit(7)\n",
                str(lock_file),
            ],
            timeout=30,
        )
        assert other.returncode == 7
    assert lock_file.read_text() == ""  # released, and no stale holder left behind
    with migration_lock(engine, "k", 0.5, waits.append, "again"):
        pass


def test_waiting_then_acquiring_yields_the_holder_we_waited_for(
    database: Path, holder: subprocess.Popen[str]
) -> None:
    engine = create_engine(f"sqlite:///{database}")
    waits: list[dict[str, Any]] = []

    def on_wait(who: dict[str, Any]) -> None:
        waits.append(who)
        holder.kill()  # the holder goes away while we wait
        holder.wait(timeout=10)

    with migration_lock(engine, "k", 30, on_wait, "me") as held:
        assert held.waited is not None and held.waited["pid"] == holder.pid
    assert [w["pid"] for w in waits] == [holder.pid]


def test_in_memory_sqlite_needs_no_lock() -> None:
    engine = create_engine("sqlite://")
    with migration_lock(engine, "k", 0, lambda _h: pytest.fail("waited"), "me") as held:
        assert held.waited is None and held.fence is None


@pytest.mark.parametrize(
    ("holder", "text"),
    [
        ({"pid": None}, "a session that has since released it"),
        ({}, "a session that has since released it"),
        ({"pid": 42}, "pid 42"),
        (
            {"pid": 42, "application_name": "psql", "client_addr": "10.0.0.1", "since": "T"},
            "pid 42, application 'psql', from 10.0.0.1, connected since T",
        ),
        ({"pid": 42, "client_addr": "local socket"}, "pid 42, from local socket"),
        (
            {"pid": 42, "application_name": "orchestrator run=r", "role": "deploy_a"}
            | {"client_addr": None, "since": None, "state": None, "hidden": True},
            "pid 42, application 'orchestrator run=r', role 'deploy_a' (its address and start "
            "are hidden from this role; pg_read_all_stats shows them)",
        ),
    ],
)
def test_describe_holder(holder: dict[str, Any], text: str) -> None:
    assert describe_holder(holder) == text


def test_a_lock_file_not_written_yet_or_gone_names_nobody(tmp_path: Path) -> None:
    """The holder took the flock but has not written its lines yet; or the file is gone."""
    empty = tmp_path / "dev.db.lock"
    empty.write_text("")
    assert _read_file_holder(empty) == {
        "pid": None,
        "application_name": None,
        "client_addr": "this machine",
        "since": None,
    }
    empty.write_text("not-a-pid\n")
    assert _read_file_holder(empty)["pid"] is None
    assert _read_file_holder(tmp_path / "gone.lock") == {"pid": None}


def test_a_lock_file_read_mid_write_names_what_it_has(tmp_path: Path) -> None:
    """The holder writes its three lines at once, but a read can still land mid-write: what
    is missing is None, never a pad of the reader's."""
    torn = tmp_path / "dev.db.lock"
    torn.write_text("123\n")
    assert _read_file_holder(torn) == {
        "pid": 123,
        "application_name": None,
        "client_addr": "this machine",
        "since": None,
    }
    torn.write_text("123\norchestrator dev run=abc\n")
    assert _read_file_holder(torn)["application_name"] == "orchestrator dev run=abc"
    assert _read_file_holder(torn)["since"] is None
