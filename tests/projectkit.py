"""A throwaway copy of this repository's Alembic project, driven as a user would.

`Project.run("migrate", "staging")` runs the real console entry point in a subprocess
(`python -m orchestrator`), with the environment variables of the project's databases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import warmstart

REPO = Path(__file__).resolve().parent.parent
URL_VARS = {
    "dev": "DEV_DATABASE_URL",
    "staging": "STAGING_DATABASE_URL",
    "prod": "PROD_DATABASE_URL",
}
SHIPPED = ["5c626978d652", "8f3b1c2d4e5a", "a41d7e9c0b12", "c7e2f5a8d903", "e19b6a3f4c70"]
HEAD = SHIPPED[-1]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Project:
    path: Path
    urls: dict[str, str]
    extra_env: dict[str, str] = field(default_factory=dict)

    def environ(self, **overrides: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ORCHESTRATOR_", "GITHUB_", "CI_"))
        }
        env.update({URL_VARS[name]: url for name, url in self.urls.items()})
        env.update(
            ORCHESTRATOR_PROJECT_DIR=str(self.path),
            ORCHESTRATOR_ACTOR="tester",
            ORCHESTRATOR_LOG_FORMAT="json",
            PYTHONPATH=str(REPO),
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def run(self, *args: str, timeout: float = 120, **env: str) -> Result:
        return self._module("orchestrator", args, timeout, env)

    def popen(self, *args: str, module: str = "orchestrator", **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=self.path,
            env=self.environ(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def alembic(self, *args: str, **env: str) -> Result:
        return self._module("alembic", args, 120, env)

    def _module(
        self, module: str, args: tuple[str, ...], timeout: float, env: dict[str, str]
    ) -> Result:
        """`python -m module args` in the project; warm-started in the quick loop."""
        environ = self.environ(**env)
        if warmstart.enabled():
            done = warmstart.run(module, list(args), self.path, environ, timeout)
            if done is not None:
                return Result(*done)
        cold = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=self.path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(cold.returncode, cold.stdout, cold.stderr)

    # -- files --------------------------------------------------------------------------

    @property
    def versions(self) -> Path:
        return self.path / "alembic" / "versions"

    def add_revision(
        self,
        rev: str,
        down: str | None,
        upgrade: str,
        downgrade: str = "pass",
        doc: str = "test revision",
        header: str = "",
    ) -> Path:
        # dedent the template before the bodies go in: a multi-line body must not change
        # the common indentation (it did, and broke every multi-line body)
        body = textwrap.dedent('''\
            """{doc}
            {header}
            """
            import sqlalchemy as sa
            from alembic import op

            revision = {rev!r}
            down_revision = {down!r}
            branch_labels = None
            depends_on = None


            def upgrade():
            {upgrade}


            def downgrade():
            {downgrade}
            ''').format(
            doc=doc,
            header=header,
            rev=rev,
            down=down,
            upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
            downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
        )
        path = self.versions / f"{rev}_test.py"
        path.write_text(body)
        return path

    def write_env(self, name: str, text: str) -> None:
        (self.path / "environments" / f"{name}.yaml").write_text(textwrap.dedent(text))

    # -- database ---------------------------------------------------------------------------

    def engine(self, env: str) -> sa.Engine:
        return sa.create_engine(self.urls[env])

    def query(self, env: str, sql: str) -> list[tuple[Any, ...]]:
        engine = self.engine(env)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(sa.text(sql))]
        finally:
            engine.dispose()

    def version(self, env: str) -> list[str]:
        """alembic_version's rows; [] only when the table does not exist. Any other error
        (an unreachable database) raises: "untouched" must never mean "could not look"."""
        engine = self.engine(env)
        try:
            with engine.connect() as connection:
                if not sa.inspect(connection).has_table("alembic_version"):
                    return []
                rows = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                return sorted(r[0] for r in rows)
        finally:
            engine.dispose()

    def ledger(self, env: str) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in self.query(
                env, "SELECT revision, direction FROM orchestrator_ledger ORDER BY id"
            )
        ]

    def audit_events(self, env: str) -> list[dict[str, Any]]:
        return [
            json.loads(r[0])
            for r in self.query(env, "SELECT payload FROM orchestrator_audit ORDER BY id")
        ]

    def schema(self, env: str) -> dict[str, Any]:
        """Tables, columns and indexes, except the orchestrator's own tables."""
        engine = self.engine(env)
        try:
            inspector = sa.inspect(engine)
            return {
                table: (
                    [(c["name"], str(c["type"])) for c in inspector.get_columns(table)],
                    sorted(i["name"] or "" for i in inspector.get_indexes(table)),
                )
                for table in sorted(inspector.get_table_names())
                if not table.startswith("orchestrator_")
            }
        finally:
            engine.dispose()


def make_project(root: Path, urls: dict[str, str]) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    for item in ("alembic.ini", "alembic", "app", "environments"):
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / item)
    return Project(root, urls)


# -- what the integration tests share: revisions, evidence, processes ------------------------


def dbname(project: Project, env: str) -> str:
    return project.urls[env].rsplit("/", 1)[1]


def add_chain(project: Project, start: str, *bodies: str) -> list[str]:
    """Revisions after `start`, one per upgrade body; returns their ids."""
    revs, down = [], start
    for i, body in enumerate(bodies):
        rev = uuid.uuid4().hex[:12]
        project.add_revision(rev, down, body, doc=f"test revision {i}")
        revs.append(rev)
        down = rev
    return revs


def waits_for_file(release: Path, seconds: int) -> str:
    """An upgrade body that holds its run until `release` exists (never in offline SQL: the
    lint renders every revision), failing after `seconds`."""
    return f"""
        import pathlib, time
        deadline = time.monotonic() + {seconds}
        while not op.get_context().as_sql and not pathlib.Path({str(release)!r}).exists():
            assert time.monotonic() < deadline, "never released"
            time.sleep(0.05)
        """


def events(
    project: Project, env: str, name: str | None = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in project.audit_events(env)
        if (name is None or e["event"] == name) and (run_id is None or e["run_id"] == run_id)
    ]


def assert_consistent(project: Project, env: str) -> None:
    """alembic_version and the ledger tell the same story, each revision applied once."""
    ups = [r for r, d in project.ledger(env) if d == "up"]
    assert len(ups) == len(set(ups)), f"a revision was recorded twice: {ups}"
    version = project.version(env)
    assert version == ([ups[-1]] if ups else []), (version, ups)


def assert_audit_verifies(project: Project, env: str) -> None:
    result = project.run("audit", "verify", "--env", env, timeout=30)
    assert result.code == 0, result.output


def sign_env(project: Project, name: str, key_name: str | None = None) -> Path:
    """Give `name` a fresh key pair and a `signing:` section; its key goes in the variable."""
    key_name = key_name or name
    private = project.path / "secrets" / f"{key_name}.key"
    made = project.run("keys", "generate", key_name, "--private-key-out", str(private))
    assert made.code == 0, made.output
    path = project.path / "environments" / f"{name}.yaml"
    text = path.read_text().split("signing:")[0]
    path.write_text(
        text + f"signing:\n  public_key: keys/{key_name}.pub\n  key_env: {name.upper()}_KEY\n"
    )
    project.extra_env[f"{name.upper()}_KEY"] = str(private)
    return private


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float = 20, every: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # tables not created yet, and the like
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    """Wait for a CLI process; kill it (and fail) if it outlives `timeout`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"{proc.args} still running after {timeout}s:\n{err[-3000:]}"
        ) from None
    return proc.returncode, out, err
