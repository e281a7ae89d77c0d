"""Warm starts of the CLI for the quick loop (`make test-fast` sets PROJECTKIT_WARM=1).

A cold `python -m orchestrator` spends most of its second importing SQLAlchemy, Alembic and
our own modules; the command itself takes tens of milliseconds on SQLite. This server imports
all of that once, then forks one fresh process per call: a real process with its own exit
code, stdout and stderr (the caller's files), environment and working directory, as
`python -m orchestrator` would have them, only without the imports. The project's own
modules (app/, env.py, revisions) are never imported here, so each call loads them afresh.

`make test` keeps the cold start for everything; tests about the console entry itself run
their own processes and never come here.

Per call: the client sends argv, env and cwd with three file descriptors (stdin, stdout,
stderr) over a SOCK_SEQPACKET socket; the server forks the command and sends back its pid,
then, once it ended, its exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# -- server ----------------------------------------------------------------------------------


def preload() -> None:
    """Import what a command imports (never a project's modules), in the parent only."""
    import importlib
    import pkgutil

    import orchestrator

    for info in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if info.name != "orchestrator.__main__":
            importlib.import_module(info.name)
    for name in (
        "alembic.command",
        "alembic.autogenerate",
        "alembic.runtime.migration",
        "alembic.script",
        "alembic.op",
        "alembic.context",
        "sqlalchemy.orm",  # what a project's models import
        "sqlalchemy.dialects.sqlite",
        "sqlalchemy.dialects.postgresql",
        "cryptography.hazmat.primitives.asymmetric.ed25519",
    ):
        with contextlib.suppress(ImportError):  # a dependency we may not have
            importlib.import_module(name)


def serve(path: str) -> None:
    preload()
    import gc

    gc.freeze()  # what the imports made stays out of every fork's collections
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(64)
    # a child's end wakes the loop: SIGCHLD writes a byte to this pipe
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[int, socket.socket] = {}  # pid -> the caller waiting for its status
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:  # the test process is gone: so are we
        ready, _, _ = select.select([server, wake_r], [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 512)
        if server in ready:
            conn, _ = server.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (server.fileno(), conn.fileno(), wake_r, wake_w):
                    os.close(fd)
                for other in running.values():
                    other.close()
                become(json.loads(message), fds)
                return  # SystemExit, raised in become, ends the interpreter as a cold run's would
            for fd in fds:
                os.close(fd)
            conn.send(f"pid {pid}".encode())
            running[pid] = conn
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = running.pop(pid)
            with contextlib.suppress(OSError):  # the caller gave up on it
                conn.send(f"exit {os.waitstatus_to_exitcode(status)}".encode())
            conn.close()


def become(request: dict[str, Any], fds: list[int]) -> None:
    """Turn this fork into `python -m MODULE ARGS` run in `cwd` with `env`."""
    import runpy

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # what `python -m` puts first: the working directory
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as Python sets it up on a terminal
    if "random" in sys.modules:  # forks share the parent's state: reseed as a new process
        sys.modules["random"].seed()
    sys.argv = [request["module"], *request["argv"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)


# -- client ----------------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="warmstart-")
        self.path = os.path.join(self.dir, "sock")
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "warmstart.py"), self.path],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the warm-start server did not start")
        atexit.register(self.stop)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def fits(self, env: dict[str, str]) -> bool:
        """The interpreter was set up by the PYTHON* variables it started with: same only."""
        names = {k for k in (*env, *self.env) if k.startswith("PYTHON")}
        return all(env.get(k) == self.env.get(k) for k in names)


_server: _Server | None = None
_starting = threading.Lock()


def enabled() -> bool:
    return os.environ.get("PROJECTKIT_WARM") == "1"


class Warm:
    """A warm-started command, as much of subprocess.Popen as the tests use."""

    def __init__(self, conn: socket.socket, pid: int, args: list[str]) -> None:
        self.conn, self.pid, self.args = conn, pid, args
        self.returncode: int | None = None

    def _status(self, message: bytes) -> int:
        self.returncode = int(message.split()[1])
        self.conn.close()
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            self.conn.setblocking(False)
            try:
                return self._status(self.conn.recv(64))
            except BlockingIOError:
                return None
            finally:
                self.conn.setblocking(True)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.conn.settimeout(timeout)
            try:
                return self._status(self.conn.recv(64))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def start(
    module: str, argv: list[str], cwd: Path, env: dict[str, str], fds: list[int]
) -> Warm | None:
    """`python -m module argv` on these stdin, stdout, stderr; None where a warm start cannot
    be the same as a cold one (then the caller starts a cold process)."""
    global _server
    with _starting:
        if _server is None:
            _server = _Server()
    if not _server.fits(env):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(_server.path)
    request = {"module": module, "argv": argv, "cwd": str(cwd), "env": env}
    socket.send_fds(conn, [json.dumps(request).encode()], fds)
    pid = int(conn.recv(64).split()[1])
    return Warm(conn, pid, [sys.executable, "-m", module, *argv])


def run(
    module: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[int, str, str] | None:
    """(code, stdout, stderr) of `python -m module argv`, or None: see start."""
    with (
        open(os.devnull) as stdin,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        proc = start(module, argv, cwd, env, [stdin.fileno(), out.fileno(), err.fileno()])
        if proc is None:
            return None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            out.seek(0)
            err.seek(0)
            raise subprocess.TimeoutExpired(proc.args, timeout, out.read(), err.read()) from None
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


if __name__ == "__main__":
    serve(sys.argv[1])
