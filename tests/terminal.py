"""Drive the orchestrator on a real pseudo-terminal, as a person at a shell would.

`Terminal(project, ["migrate", "prod"])` starts it with stdin, stdout and stderr on a pty;
`expect(text)` reads until `text` has been shown, `send(line)` types a line, `finish()` reads
the rest and returns the exit code. Everything shown is in `seen`.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import warmstart
from projectkit import Project


class Terminal:
    def __init__(self, project: Project, args: list[str], timeout: float = 60, **env: str) -> None:
        leader, follower = pty.openpty()
        environ = project.environ(**env)
        environ.pop("ORCHESTRATOR_LOG_FORMAT", None)  # auto: what a person gets
        environ.setdefault("TERM", "xterm")
        environ.update(env)
        warm = None
        if warmstart.enabled():  # the quick loop: a warm start on the same terminal
            warm = warmstart.start("orchestrator", args, project.path, environ, [follower] * 3)
        self.process: subprocess.Popen[bytes] | warmstart.Warm = warm or subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=project.path,
            env=environ,
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        self.leader = leader
        self.deadline = time.monotonic() + timeout
        self.raw = b""

    @property
    def seen(self) -> str:
        return self.raw.decode(errors="replace").replace("\r\n", "\n")

    def _read(self, wait: float = 1) -> bool:
        """Read what is there; False once the program closed the terminal."""
        ready, _, _ = select.select([self.leader], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.leader, 4096)
        except OSError:
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, text: str) -> str:
        while text not in self.seen:
            if time.monotonic() > self.deadline:
                raise AssertionError(f"never shown: {text!r}; the terminal shows:\n{self.seen}")
            if not self._read() and text not in self.seen:
                raise AssertionError(f"exited before showing {text!r}:\n{self.seen}")
        return self.seen

    def send(self, line: str) -> None:
        os.write(self.leader, line.encode() + b"\n")

    def finish(self) -> int:
        while time.monotonic() < self.deadline and self._read():
            if self.process.poll() is not None and not select.select([self.leader], [], [], 0)[0]:
                break
        code = self.process.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        os.close(self.leader)
        return code
