"""Throwaway PostgreSQL cluster for tests, built from the machine's binaries.

Usage::

    cluster = PgCluster()
    cluster.start()
    try:
        cluster.create_database("t_abc")
        url = cluster.url("t_abc")   # postgresql+psycopg://postgres@127.0.0.1:PORT/t_abc
    finally:
        cluster.stop()

The cluster uses trust authentication, listens only on 127.0.0.1 on a free
port, and keeps its unix socket next to the data directory. When running as
root (PostgreSQL refuses to), the server runs as the ``postgres`` user via
``runuser``. Failures raise ``PgClusterError`` with the tail of the server log;
nothing here ever skips.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["PgCluster", "PgClusterError", "find_bin_dir"]

_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_REQUIRED = ("initdb", "pg_ctl", "postgres")


class PgClusterError(RuntimeError):
    """Raised when the cluster cannot be found, installed, started or used."""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def _search_bin_dir() -> Path | None:
    candidates = [
        d for d in glob.glob(_BIN_GLOB) if all(os.access(Path(d) / b, os.X_OK) for b in _REQUIRED)
    ]
    if not candidates:
        return None
    return Path(max(candidates, key=_version_key))


def find_bin_dir(install: bool = True) -> Path:
    """Return the highest-version PostgreSQL bin dir, installing via apt if root."""
    found = _search_bin_dir()
    if found is not None:
        return found
    if install and _is_root():
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(
            "apt-get update && apt-get install -y postgresql",
            shell=True,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise PgClusterError(
                "apt-get install postgresql failed "
                f"(rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        found = _search_bin_dir()
        if found is not None:
            return found
    raise PgClusterError(
        f"No PostgreSQL binaries found under {_BIN_GLOB} "
        f"(need {', '.join(_REQUIRED)}); install the 'postgresql' package"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A temporary PostgreSQL cluster (initdb + pg_ctl) for the test session."""

    def __init__(self, bin_dir: Path | str | None = None) -> None:
        self.bin_dir: Path = Path(bin_dir) if bin_dir else find_bin_dir()
        self.as_root = _is_root()
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self.log_file: Path | None = None
        self._started = False

    # ------------------------------------------------------------------ helpers
    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run_pg(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=str(self.base_dir) if self.base_dir else None,
        )
        if proc.returncode != 0:
            raise PgClusterError(
                f"{what} failed (rc={proc.returncode}): {' '.join(argv)}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}\n"
                f"server log tail:\n{self.log_tail()}"
            )
        return proc

    def log_tail(self, lines: int = 60) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "<no server log>"
        try:
            content = self.log_file.read_text(errors="replace").splitlines()
        except OSError as exc:  # pragma: no cover - diagnostic only
            return f"<cannot read server log: {exc}>"
        return "\n".join(content[-lines:])

    # ------------------------------------------- sharing one cluster with xdist workers
    def describe(self) -> dict[str, str]:
        """What a worker process needs to use this running cluster (see `attach`)."""
        return {
            "bin_dir": str(self.bin_dir),
            "port": str(self._require_started()),
            "base_dir": str(self.base_dir),
            "log_file": str(self.log_file),
        }

    @classmethod
    def attach(cls, described: dict[str, str]) -> PgCluster:
        """The cluster another process started (it alone stops it)."""
        cluster = cls(described["bin_dir"])
        cluster.port = int(described["port"])
        cluster.base_dir = Path(described["base_dir"])
        cluster.log_file = Path(described["log_file"])
        cluster._started = True
        return cluster

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> PgCluster:
        if self._started:
            return self
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        try:
            if self.as_root:
                # The postgres user must be able to traverse to and write here.
                os.chmod(self.base_dir, 0o755)
                shutil.chown(self.base_dir, user="postgres", group="postgres")
            else:
                self.base_dir.chmod(0o700)
            self._run_pg(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                "initdb",
            )
            last_error: PgClusterError | None = None
            for _attempt in range(3):  # retry in case the free port got taken
                self.port = _free_port()
                opts = " ".join(
                    [
                        f"-p {self.port}",
                        f"-c listen_addresses={self.host}",
                        f"-c unix_socket_directories='{self.base_dir}'",
                        "-c max_connections=200",
                        "-c fsync=off",
                        "-c synchronous_commit=off",
                        "-c full_page_writes=off",
                    ]
                )
                try:
                    self._run_pg(
                        [
                            self._bin("pg_ctl"),
                            "-D",
                            str(self.data_dir),
                            "-w",
                            "-t",
                            "60",
                            "-o",
                            opts,
                            "-l",
                            str(self.log_file),
                            "start",
                        ],
                        "pg_ctl start",
                    )
                    last_error = None
                    break
                except PgClusterError as exc:
                    last_error = exc
                    if "already in use" not in self.log_tail():
                        break
            if last_error is not None:
                raise last_error
            self._started = True
            # Fail loudly right away if the server is not actually reachable.
            with self.connect("postgres") as conn:
                conn.execute("SELECT 1")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.data_dir is not None and (self.data_dir / "postmaster.pid").exists():
            argv = [self._bin("pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "immediate"]
            if self.as_root:
                argv = ["runuser", "-u", "postgres", "--", *argv]
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        self._started = False
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = self.data_dir = self.log_file = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ access
    def _require_started(self) -> int:
        if not self._started or self.port is None:
            raise PgClusterError("PgCluster is not started")
        return self.port

    def url(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        """SQLAlchemy URL: ``postgresql+psycopg://user[:pw]@127.0.0.1:PORT/dbname``."""
        port = self._require_started()
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql+psycopg://{auth}@{self.host}:{port}/{quote(dbname, safe='')}"

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """libpq conninfo string (for psycopg.connect)."""
        port = self._require_started()
        return f"host={self.host} port={port} dbname={dbname} user={user}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A psycopg autocommit connection as the postgres superuser."""
        try:
            return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise PgClusterError(
                f"cannot connect to test cluster db={dbname}: {exc}\n"
                f"server log tail:\n{self.log_tail()}"
            ) from exc

    def create_database(self, name: str) -> None:
        with self.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with self.connect("postgres") as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def create_role(self, name: str, password: str) -> None:
        """LOGIN SUPERUSER role with a password (accepted, not checked: auth is trust)."""
        with self.connect("postgres") as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )

    def psql_args(self, dbname: str) -> list[str]:
        """argv prefix to run psql against ``dbname`` (append e.g. ``-c 'select 1'``)."""
        port = self._require_started()
        return [
            str(self.bin_dir / "psql"),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            dbname,
        ]
