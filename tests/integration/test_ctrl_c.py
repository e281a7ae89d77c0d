"""Ctrl-C and SIGTERM answer at once (issue 35): the first signal is acknowledged on stderr
while the revision runs; a second Ctrl-C cancels the running statement (psycopg's cancel
request at the server) and the revision rolls back; no revision that will not run is
announced. Real signals to a real process running a slow revision (pg_sleep) on PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from typing import Any

import pytest
from projectkit import HEAD, Project

SLOW, NEXT = "510e00000001", "510e00000002"


def slow_history(project: Project, seconds: int) -> None:
    project.add_revision(
        SLOW,
        HEAD,
        f'op.execute("CREATE TABLE slow_done (id int)")\nop.execute("SELECT pg_sleep({seconds})")',
    )
    project.add_revision(NEXT, SLOW, 'op.execute("CREATE TABLE next_done (id int)")')


class Lines:
    """stderr read as it comes, one JSON object a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.items: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.items.append(json.loads(line))

    def wait_for(self, event: str, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if any(e.get("event") == event for e in self.items):
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"no {event} within {timeout} s: {self.items[-5:]}")


def sleeping(project: Project) -> bool:
    rows = project.query(
        "dev",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
        "AND state = 'active' AND datname = current_database()",
    )
    return bool(rows[0][0])


def start(project: Project) -> tuple[subprocess.Popen[str], Lines]:
    assert project.run("migrate", "dev", "--to", HEAD).code == 0
    proc = project.popen("migrate", "dev", ORCHESTRATOR_PROGRESS_SECONDS="60")
    lines = Lines(proc)
    deadline = time.monotonic() + 60
    while not sleeping(project):
        assert time.monotonic() < deadline and proc.poll() is None, lines.items[-5:]
        time.sleep(0.1)
    return proc, lines


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_first_signal_is_answered_at_once_and_the_revision_finishes(
    pg_project: Project, signum: signal.Signals, code: int
) -> None:
    slow_history(pg_project, 4)
    proc, lines = start(pg_project)
    proc.send_signal(signum)
    assert lines.wait_for("run.stopping", 2) < 2
    (ack,) = [e for e in lines.items if e["event"] == "run.stopping"]
    assert ack["message"] == f"{signum.name}: stopping after this revision; Ctrl-C again cancels it"
    assert proc.wait(60) == code
    lines.thread.join(5)
    assert pg_project.version("dev") == [SLOW]  # it finished; the next one never started
    announced = [e.get("revision") for e in lines.items if e["event"] == "migration.running"]
    assert NEXT not in announced
    assert not any("Traceback" in json.dumps(e) for e in lines.items)


def test_a_second_ctrl_c_cancels_the_statement_and_rolls_the_revision_back(
    pg_project: Project,
) -> None:
    slow_history(pg_project, 60)
    proc, lines = start(pg_project)
    proc.send_signal(signal.SIGINT)
    lines.wait_for("run.stopping", 2)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    assert time.monotonic() - began < 10  # not the 60 s of the statement
    lines.thread.join(5)
    assert pg_project.version("dev") == [HEAD]  # rolled back
    assert pg_project.query("dev", "SELECT to_regclass('slow_done')") == [(None,)]
    assert not sleeping(pg_project)  # the statement was cancelled at the server
    assert [r for r, _ in pg_project.ledger("dev")][-1] == HEAD
    (stopped,) = [e for e in pg_project.audit_events("dev") if e["event"] == "run.interrupted"]
    assert "statement cancelled" in stopped["reason"] and stopped["applied"] == []
    assert not any("Traceback" in json.dumps(e) for e in lines.items)


def test_on_the_console_the_next_revision_is_never_announced(pg_project: Project) -> None:
    slow_history(pg_project, 4)
    assert pg_project.run("migrate", "dev", "--to", HEAD).code == 0
    proc = pg_project.popen("migrate", "dev", "--log-format", "console")
    deadline = time.monotonic() + 60
    while not sleeping(pg_project):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGINT: stopping after this revision; Ctrl-C again cancels it" in err
    announced = [line for line in err.splitlines() if "migration.running" in line]
    assert any(SLOW in line for line in announced), err
    assert not any(NEXT in line for line in announced), err
