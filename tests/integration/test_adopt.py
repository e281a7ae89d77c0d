"""Adopting the orchestrator in an Alembic project nobody here wrote, the pipelines and
schedulers that run it, and the package that carries it.

The adopted project is made by the real `alembic init`, migrated by plain Alembic with its
stock env.py first (as it has been for years), then handed over with `orchestrator init`,
adopted with `baseline`, and promoted through the gate on real PostgreSQL.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from projectkit import REPO, Result

from orchestrator.cli import build_parser
from orchestrator.core.errors import UsageError
from orchestrator.running.fleet import parse_shard

BIN = Path(sys.executable).parent
REVISIONS = [f"{i:02d}aaaaaaaaaa" for i in range(1, 13)]  # a dozen revisions of its own


def revision_file(index: int) -> str:
    """Revision i creates table t_i; every third one adds a column to the previous table."""
    rev, down = REVISIONS[index], (REVISIONS[index - 1] if index else None)
    body = [f"op.create_table('t_{index}', sa.Column('id', sa.Integer, primary_key=True))"]
    undo = [f"op.drop_table('t_{index}')"]
    if index % 3 == 2:
        body.append(f"op.add_column('t_{index - 1}', sa.Column('note', sa.Text, nullable=True))")
        undo.insert(0, f"op.drop_column('t_{index - 1}', 'note')")
    return "\n".join(
        [
            f'"""step {index}',
            "",
            f"Revision ID: {rev}",
            f"Revises: {down or ''}",
            '"""',
            "from alembic import op",
            "import sqlalchemy as sa",
            "",
            f"revision = {rev!r}",
            f"down_revision = {down!r}",
            "branch_labels = None",
            "depends_on = None",
            "",
            "",
            "def upgrade():",
            *(f"    {line}" for line in body),
            "",
            "",
            "def downgrade():",
            *(f"    {line}" for line in undo),
            "",
        ]
    )


class Adopted:
    """A project made by `alembic init`, run from its own directory."""

    def __init__(self, path: Path, urls: dict[str, str]) -> None:
        self.path, self.urls = path, urls

    def environ(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ORCHESTRATOR_", "GITHUB_", "CI_", "JOB_COMPLETION"))
        }
        env.update({f"{n.upper()}_DATABASE_URL": u for n, u in self.urls.items()})
        env.update(ORCHESTRATOR_ACTOR="adopter", ORCHESTRATOR_LOG_FORMAT="json")
        env.update(PYTHONPATH=str(REPO))
        env.update(extra)
        return env

    def run(self, *args: str, **extra: str) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.path,
            env=self.environ(**extra),
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def stock_alembic(self, url: str, *args: str) -> None:
        """Plain Alembic with the stock env.py, which reads sqlalchemy.url from the ini."""
        ini = self.path / "alembic.ini"
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(ini)
        original = ini.read_text()
        parser["alembic"]["sqlalchemy.url"] = url.replace("%", "%%")
        with ini.open("w") as file:
            parser.write(file)
        try:
            done = subprocess.run(
                [str(BIN / "alembic"), *args],
                cwd=self.path,
                env=self.environ(),
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert done.returncode == 0, done.stderr
        finally:
            ini.write_text(original)

    def versions_digest(self, versions: Path) -> str:
        digest = hashlib.sha256()
        for path in sorted(versions.rglob("*")):
            digest.update(path.name.encode())
            if path.is_file():
                digest.update(path.read_bytes())
        return digest.hexdigest()


def alembic_init(root: Path, template: str, directory: str) -> Path:
    root.mkdir(parents=True)
    done = subprocess.run(
        [str(BIN / "alembic"), "init", "-t", template, directory],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return root / directory


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(sa.text(sql))]
    finally:
        engine.dispose()


def test_generic_project_is_adopted_and_promoted_through_the_gate(
    tmp_path: Path, pg_url_factory: Any
) -> None:
    script = alembic_init(tmp_path / "shop", "generic", "alembic")
    for index in range(len(REVISIONS)):
        (script / "versions" / f"{REVISIONS[index]}_step_{index}.py").write_text(
            revision_file(index)
        )
    project = Adopted(tmp_path / "shop", {"staging": pg_url_factory(), "prod": pg_url_factory()})
    # years of plain Alembic: staging at head, prod eight revisions in
    project.stock_alembic(project.urls["staging"], "upgrade", "head")
    project.stock_alembic(project.urls["prod"], "upgrade", REVISIONS[7])
    before = project.versions_digest(script / "versions")
    env_py = (script / "env.py").read_text()

    dry = project.run("init", "--dry-run")
    assert dry.code == 0, dry.output
    assert "would write" in dry.stdout and "environments/prod.yaml" in dry.stdout
    assert not (project.path / "environments").exists()
    assert (script / "env.py").read_text() == env_py

    done = project.run("init", "--json")
    assert done.code == 0, done.output
    actions = {a["path"]: a["action"] for a in done.json()["actions"]}
    assert actions == {
        "environments/dev.yaml": "write",
        "environments/staging.yaml": "write",
        "environments/prod.yaml": "write",
        "alembic/env.py": "hand over",
        ".gitignore": "write",
    }
    assert (project.path / ".gitignore").read_text() == ".orchestrator/\n__pycache__/\n"
    assert done.json()["adopted"] is True
    assert project.versions_digest(script / "versions") == before
    handed = (script / "env.py").read_text()
    assert "run_migrations(target_metadata)" in handed
    assert "if context.is_offline_mode():\n    run_migrations_offline()" not in handed
    # the rest of the user's env.py is theirs, untouched
    assert handed.startswith(env_py[: env_py.index("if context.is_offline_mode():")].rstrip())

    envs = project.run("envs", "--json")
    assert envs.code == 0, envs.output
    assert [e["name"] for e in envs.json()] == ["dev", "staging", "prod"]

    # not adopted yet: nothing staging ran is trusted
    refused = project.run("promote", "prod", "--approve")
    assert refused.code == 3, refused.output
    assert "baseline" in refused.stderr
    assert rows(project.urls["prod"], "SELECT version_num FROM alembic_version") == [
        (REVISIONS[7],)
    ]

    dev = project.run("migrate", "dev")
    assert dev.code == 0, dev.output
    for env, rev in (("staging", REVISIONS[-1]), ("prod", REVISIONS[7])):
        adopted = project.run("baseline", env, "--revision", rev, "--reason", "adopt")
        assert adopted.code == 0, adopted.output

    promoted = project.run("promote", "prod", "--approve")
    assert promoted.code == 0, promoted.output
    assert rows(project.urls["prod"], "SELECT version_num FROM alembic_version") == [
        (REVISIONS[-1],)
    ]
    applied = rows(
        project.urls["prod"],
        "SELECT revision FROM orchestrator_ledger WHERE direction = 'up' ORDER BY id",
    )
    assert [r for (r,) in applied] == REVISIONS[8:]
    # plain alembic now goes through the orchestrator too: the same lock, ledger and trail
    plain = subprocess.run(
        [str(BIN / "alembic"), "-x", "env=staging", "current"],
        cwd=project.path,
        env=project.environ(),
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 0, plain.stderr
    assert REVISIONS[-1] in plain.stdout


def test_pyproject_template_project_is_adopted(tmp_path: Path) -> None:
    script = alembic_init(tmp_path / "svc", "pyproject", "migrations")
    for index in range(3):
        (script / "versions" / f"{REVISIONS[index]}_step_{index}.py").write_text(
            revision_file(index)
        )
    project = Adopted(tmp_path / "svc", {})
    done = project.run("init", "--envs", "dev,prod")
    assert done.code == 0, done.output
    assert sorted(p.name for p in (project.path / "environments").iterdir()) == [
        "dev.yaml",
        "prod.yaml",
    ]
    migrated = project.run("migrate", "dev", "--json")
    assert migrated.code == 0, migrated.output
    assert migrated.json()[0]["applied"] == REVISIONS[:3]
    history = project.run("history", "--json")
    assert [r["revision"] for r in history.json()][:3] == REVISIONS[2::-1]


def test_init_never_overwrites_and_leaves_a_custom_env_py_alone(tmp_path: Path) -> None:
    script = alembic_init(tmp_path / "app", "generic", "alembic")
    custom = "from alembic import context\n\ncontext.configure(url='x')\nrun_my_way()\n"
    (script / "env.py").write_text(custom)
    (tmp_path / "app" / "environments").mkdir()
    mine = "name: dev\ndatabase:\n  url: sqlite:///mine.db\n"
    (tmp_path / "app" / "environments" / "dev.yaml").write_text(mine)

    done = Adopted(tmp_path / "app", {}).run("init")
    assert done.code == 0, done.output
    assert (script / "env.py").read_text() == custom
    assert (tmp_path / "app" / "environments" / "dev.yaml").read_text() == mine
    assert "keep" in done.stdout and "change by hand" in done.stdout
    assert "run_migrations(target_metadata)" in done.stdout  # the exact change to make
    assert "NOT adopted yet" in done.stdout and "next: set" not in done.stdout
    assert (tmp_path / "app" / "environments" / "prod.yaml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["init"], "alembic.ini"), (["init", "--envs", "dev,dev"], "distinct names")],
)
def test_init_bad_input_is_a_usage_error(tmp_path: Path, args: list[str], message: str) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    if "--envs" in args:
        alembic_init(tmp_path / "x", "generic", "alembic")
        root = tmp_path / "x"
    done = Adopted(root, {}).run(*args)
    assert done.code == 2, done.output
    assert message in done.stderr and "Traceback" not in done.stderr


# -- shards from the CI or scheduler ----------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "shard"),
    [
        ({"ORCHESTRATOR_SHARD": "2/5"}, (2, 5)),
        ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "4"}, (3, 4)),
        ({"JOB_COMPLETION_INDEX": "0", "ORCHESTRATOR_SHARD_TOTAL": "4"}, (1, 4)),
        ({"JOB_COMPLETION_INDEX": "3", "ORCHESTRATOR_SHARD_TOTAL": "4"}, (4, 4)),
    ],
)
def test_shard_auto_reads_each_scheduler(environ: dict[str, str], shard: tuple[int, int]) -> None:
    assert parse_shard("auto", environ) == shard


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no shard is set"),
        ({"JOB_COMPLETION_INDEX": "1"}, "ORCHESTRATOR_SHARD_TOTAL"),
        ({"JOB_COMPLETION_INDEX": "4", "ORCHESTRATOR_SHARD_TOTAL": "4"}, "between 1 and N"),
        ({"CI_NODE_INDEX": "x", "CI_NODE_TOTAL": "2"}, "CI_NODE_INDEX"),
    ],
)
def test_shard_auto_without_a_usable_shard_is_a_usage_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        parse_shard("auto", environ)


def fleet_project(tmp_path: Path, server_url: str, tenants: list[str]) -> Adopted:
    from projectkit import make_project

    project = make_project(tmp_path / "fleet", {})
    (project.path / "environments" / "tenants").mkdir()
    (project.path / "environments" / "tenants" / "all.txt").write_text("\n".join(tenants) + "\n")
    project.write_env(
        "dev",
        """\
        name: dev
        database:
          url: sqlite:///.orchestrator/dev.db
        policy:
          lint: off
        """,
    )
    project.write_env(
        "staging",
        """\
        name: staging
        promotes_from: dev
        database:
          url_env: STAGING_DATABASE_URL
          databases_file: tenants/all.txt
        policy:
          lint: off
        """,
    )
    return Adopted(project.path, {"staging": server_url})


def test_four_scheduler_pods_migrate_a_fleet_once(tmp_path: Path, pg_cluster: Any) -> None:
    tenants = [f"tenant_{i:02d}" for i in range(10)]
    for name in tenants:
        pg_cluster.create_database(name)
    try:
        project = fleet_project(tmp_path, pg_cluster.url("postgres"), tenants)
        assert project.run("migrate", "dev").code == 0
        pods = [
            subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "migrate", "staging", "--shard", "auto"],
                cwd=project.path,
                env=project.environ(JOB_COMPLETION_INDEX=str(i), ORCHESTRATOR_SHARD_TOTAL="4"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        outcomes = [(p.communicate(timeout=300)[1], p.returncode) for p in pods]
        assert [code for _, code in outcomes] == [0, 0, 0, 0], outcomes
        for name in tenants:
            url = pg_cluster.url(name)
            ups = rows(url, "SELECT revision, run_id FROM orchestrator_ledger")
            assert len(ups) == 5, (name, ups)  # the shipped history, each revision once
            assert len({run for _, run in ups}) == 1  # by exactly one pod
    finally:
        for name in tenants:
            pg_cluster.drop_database(name)


# -- databases_file is relative to its environment file ---------------------------------------


def test_databases_file_beside_the_environment_file(tmp_path: Path) -> None:
    project = fleet_project(tmp_path, "sqlite:///.orchestrator/t/{database}.db", ["a", "b"])
    done = project.run("status", "staging", "--json")
    assert done.code == 0, done.output
    assert sorted(r["target"] for r in done.json()) == ["a", "b"]


def test_databases_file_relative_to_the_project_still_works_with_a_warning(
    tmp_path: Path,
) -> None:
    project = fleet_project(tmp_path, "sqlite:///.orchestrator/t/{database}.db", ["a", "b"])
    (project.path / "legacy.txt").write_text("c\nd\n")
    staging = project.path / "environments" / "staging.yaml"
    staging.write_text(staging.read_text().replace("tenants/all.txt", "legacy.txt"))
    done = project.run("status", "staging", "--json")
    assert done.code == 0, done.output
    assert sorted(r["target"] for r in done.json()) == ["c", "d"]
    assert "deprecated" in done.stderr and "legacy.txt" in done.stderr


# -- pipelines: the examples use the real commands --------------------------------------------

EXAMPLES = REPO / "examples"
PLACEHOLDER = re.compile(r"\$\{\{[^}]*\}\}|\$[A-Z_]+|\"\$[A-Z_]+\"")


def orchestrator_commands(text: str) -> list[list[str]]:
    """Every `orchestrator ...` command line of a pipeline file, placeholders filled in."""
    found = []
    for line in text.splitlines():
        match = re.search(r"(?:run:|-)\s+(orchestrator\s.*)$", line)
        if match:
            command = PLACEHOLDER.sub("X", match.group(1).split(">>")[0])
            found.append(shlex.split(command)[1:])
    return found


def known_envs() -> set[str]:
    names = {p.stem for p in (REPO / "environments").glob("*.yaml")}
    return names | {p.stem for p in (EXAMPLES / "ci").glob("*.yaml") if p.stem == "tenants"}


def assert_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)  # SystemExit(2) on a flag that no longer exists
    for name in ("env", "through"):
        value = getattr(args, name, None)
        if value is not None and not (args.command == "plan" and value in ("show", "approve")):
            assert value in known_envs(), (argv, value)


def test_github_workflow_passes_actionlint_and_uses_real_commands() -> None:
    workflow = EXAMPLES / "ci" / "github-actions.yml"
    done = subprocess.run(
        [str(BIN / "actionlint"), "-no-color", str(workflow)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    commands = orchestrator_commands(workflow.read_text())
    assert {c[0] for c in commands} >= {"check", "migrate", "plan", "promote"}
    for argv in commands:
        assert_parses(argv)
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    # the prod job holds prod's secret and, for the gate, a read-only staging URL: no other
    assert {v for v in jobs["prod"]["env"].values() if "secrets." in v} == {
        "${{ secrets.PROD_DATABASE_URL }}",
        "${{ secrets.STAGING_READONLY_DATABASE_URL }}",
    }
    assert jobs["tenants"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]


def test_gitlab_pipeline_is_well_formed_and_uses_real_commands() -> None:
    pipeline = yaml.safe_load((EXAMPLES / "ci" / "gitlab-ci.yml").read_text())
    stages = pipeline["stages"]
    jobs = {k: v for k, v in pipeline.items() if isinstance(v, dict) and "script" in v}
    assert set(jobs) == {"check", "staging", "prod", "tenants"}
    for name, job in jobs.items():
        assert job["stage"] in stages, name
        for needed in job.get("needs", []):
            assert needed in jobs and stages.index(jobs[needed]["stage"]) < stages.index(
                job["stage"]
            )
        for line in job["script"]:
            assert line.startswith("orchestrator "), line
            assert_parses(shlex.split(PLACEHOLDER.sub("X", line))[1:])
    assert jobs["prod"]["rules"][0]["when"] == "manual"
    assert "--shard auto" in jobs["tenants"]["script"][0] and jobs["tenants"]["parallel"] == 4


def test_kubernetes_indexed_job_runs_one_shard_per_pod() -> None:
    job = yaml.safe_load((EXAMPLES / "k8s" / "fleet-job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["ORCHESTRATOR_SHARD_TOTAL"]) == spec["completions"]
    assert container["command"][0] == "orchestrator"
    assert_parses(container["command"][1:])
    assert container["command"][container["command"].index("--shard") + 1] == "auto"


def test_example_tenants_environment_is_valid() -> None:
    from orchestrator.core.config import parse_environment

    path = EXAMPLES / "ci" / "tenants.yaml"
    env = parse_environment(path.read_text(), str(path))
    assert env.promotes_from == "prod" and env.database.databases_file


# -- packaging: a wheel gives every command, lint included -------------------------------------


def test_wheel_installs_into_a_fresh_virtualenv_with_every_command(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "orchestrator"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy
        copy(REPO / item, source / item)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("alembic_orchestrator-*.whl"))
    assert next((tmp_path / "dist").glob("alembic_orchestrator-*.tar.gz"))

    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    # The dependencies come from this test run's environment (no registry during tests);
    # the wheel itself, and the metadata that names them, are what is under test.
    site = next(fresh.glob("lib/python*/site-packages"))
    (site / "deps.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n"
    )
    installed = subprocess.run(
        [str(fresh / "bin" / "pip"), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    metadata = subprocess.run(
        [str(fresh / "bin" / "pip"), "show", "alembic-orchestrator"],
        capture_output=True,
        text=True,
    ).stdout
    requires = re.search(r"Requires: (.*)", metadata)
    assert requires and "squawk-cli" in requires.group(1), metadata  # lint in the default install

    project = tmp_path / "project"
    shutil.copytree(
        REPO / "alembic", project / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    for item in ("alembic.ini", "environments", "app"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy
        copy(REPO / item, project / item)
    env = {
        "PATH": f"{fresh / 'bin'}:{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ORCHESTRATOR_LOG_FORMAT": "json",
    }
    for argv in (["envs"], ["history"], ["check"], ["migrate", "dev"], ["status", "dev"]):
        done = subprocess.run(
            [str(fresh / "bin" / "orchestrator"), *argv],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
    imported = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(fresh) in imported.stdout, imported.stdout + imported.stderr
