"""On a terminal, a require_approval environment asks for its name to be typed."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from projectkit import HEAD, Project


def run_on_terminal(project: Project, args: list[str], typed: str) -> tuple[int, str]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=project.path,
        env=project.environ(ORCHESTRATOR_LOG_FORMAT="console"),
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Type its name" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            seen += os.read(leader, 4096)
    os.write(leader, typed.encode() + b"\n")
    while True:  # read the terminal until the program exits and closes it
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None or time.monotonic() > deadline:
            break
    process.wait(timeout=60)
    os.close(leader)
    return process.returncode, seen.decode(errors="replace")


def test_typing_the_name_approves_and_a_wrong_name_refuses(sqlite_project: Project) -> None:
    for env in ("dev", "staging"):
        assert sqlite_project.run("migrate", env).code == 0
    code, err = run_on_terminal(sqlite_project, ["migrate", "prod"], "staging")
    assert code == 3 and "does not match" in err
    assert sqlite_project.version("prod") == []
    code, err = run_on_terminal(sqlite_project, ["migrate", "prod"], "prod")
    assert code == 0, err
    assert sqlite_project.version("prod") == [HEAD]
