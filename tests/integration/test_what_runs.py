"""What runs is what was hashed (SPEC Part 2): a revision's checksum covers the project
modules it imports, on real databases through the CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
from projectkit import HEAD, Project

HELPER_REV = "f0f0f0f0f0f0"


def add_helper_revision(project: Project) -> None:
    """A revision whose upgrade takes a table name from a project helper, two imports deep."""
    (project.path / "app" / "naming.py").write_text("from app.words import NAME\n")
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"\n')
    project.add_revision(
        HELPER_REV,
        HEAD,
        upgrade="""
        from app.naming import NAME

        op.create_table(NAME, sa.Column("id", sa.Integer, primary_key=True))
        """,
        downgrade='op.drop_table("audit_notes")',
    )


@pytest.fixture(params=["pg", "sqlite"])
def project(request: pytest.FixtureRequest) -> Project:
    return request.getfixturevalue(f"{request.param}_project")


def test_helper_edited_after_staging_ran_it_is_drift_and_refused(project: Project) -> None:
    add_helper_revision(project)
    for env in ("dev", "staging"):
        result = project.run("migrate", env)
        assert result.code == 0, result.stderr
    assert "audit_notes" in project.schema("staging")
    # the same checksum on both sides while nothing changes
    assert project.run("plan", "prod").code == 0

    # an edit two imports away from the revision
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"  # harmless?\n')

    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    assert f"{HELPER_REV}: edited since staging ran it" in refused.stderr
    assert project.version("prod") == []
    promote = project.run("promote", "prod", "--approve")
    assert promote.code == 3
    assert f"{HELPER_REV}: edited since staging ran it" in promote.stderr

    status = project.run("status", "--json")
    assert status.code == 0, status.stderr
    rows = {r["env"]: r for r in status.json()}
    assert rows["staging"]["drift"] == [HELPER_REV]
    assert [b["revision"] for b in rows["prod"]["blocked"]] == [HELPER_REV]

    # an unrelated module of the project is no drift
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"\n')
    (project.path / "app" / "unrelated.py").write_text("X = 1\n")
    rows = {r["env"]: r for r in project.run("status", "--json").json()}
    assert rows["staging"]["drift"] == []
    assert project.run("migrate", "prod", "--approve").code == 0
    assert "audit_notes" in project.schema("prod")


def plant_pyc(source: Path, planted_code: str) -> Path:
    """Compile other code into `source`'s `__pycache__` slot as an unchecked-hash .pyc,
    which Python uses without comparing it with the source (git ignores it too)."""
    fake = source.with_name(f"planted_{source.name}")
    fake.write_text(planted_code)
    cfile = importlib.util.cache_from_source(str(source))
    py_compile.compile(
        str(fake), cfile=cfile, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    fake.unlink()
    return Path(cfile)


def python_loads(path: Path, attribute: str) -> str:
    """What plain Python gets for `attribute` when it loads `path` (as Alembic does)."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"print(module.{attribute})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def expected_checksum(project: Project, revision: Path, modules: list[str]) -> str:
    """The documented format (README, "The promotion gate"), computed independently."""

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()

    pairs = sorted([name, digest(project.path / name)] for name in modules)
    text = json.dumps([digest(revision), pairs], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("plant", ["revision", "helper"])
def test_planted_bytecode_never_runs(pg_project: Project, plant: str) -> None:
    """An unchecked-hash .pyc of other code, for the revision or for a module it imports,
    through the orchestrator (dev, prod) and plain Alembic (staging)."""
    project = pg_project
    add_helper_revision(project)
    revision = next(project.versions.glob(f"{HELPER_REV}_*.py"))
    words = project.path / "app" / "words.py"
    if plant == "revision":
        planted = revision.read_text().replace(
            'op.create_table(NAME, sa.Column("id", sa.Integer, primary_key=True))',
            'op.create_table("planted_by_revision_pyc", sa.Column("id", sa.Integer))',
        )
        assert "planted_by_revision_pyc" in planted
        target = revision
    else:
        planted, target = 'NAME = "planted_by_helper_pyc"\n', words
    cache = plant_pyc(target, planted + 'MARK = "planted"\n')
    # the plant is live: plain Python runs it instead of the source
    assert python_loads(target, "MARK") == "planted"

    result = project.run("migrate", "dev")
    assert result.code == 0, result.stderr
    result = project.alembic("-x", "env=staging", "upgrade", "head")
    assert result.code == 0, result.stderr
    promoted = project.run("promote", "prod", "--approve")
    assert promoted.code == 0, promoted.stderr

    want = expected_checksum(
        project, revision, ["app/__init__.py", "app/naming.py", "app/words.py"]
    )
    for env in ("dev", "staging", "prod"):
        tables = set(project.schema(env))
        assert "audit_notes" in tables
        assert not {"planted_by_revision_pyc", "planted_by_helper_pyc"} & tables
        rows = project.query(
            env, f"SELECT checksum FROM orchestrator_ledger WHERE revision = '{HELPER_REV}'"
        )
        assert rows == [(want,)]
    # nothing was written beside the sources either: the plant is the only cache there
    assert list(target.parent.joinpath("__pycache__").glob("*.pyc")) == [cache]


def test_a_file_changed_after_the_gate_judged_it_does_not_run(pg_project: Project) -> None:
    """The revision rewrites its own helper when loaded: the run sees the files change
    between judging and running them and runs nothing."""
    project = pg_project
    add_helper_revision(project)
    revision = next(project.versions.glob(f"{HELPER_REV}_*.py"))
    sneaky = (
        "from pathlib import Path\n"
        "_words = Path(__file__).resolve().parents[2] / 'app' / 'words.py'\n"
        "_words.write_text('NAME = \"sneaky\"\\n')\n"
    )
    text = revision.read_text()
    op_import = "from alembic import op\n"
    revision.write_text(text.replace(op_import, op_import + sneaky))
    assert project.run("migrate", "dev", "--to", HEAD).code == 0
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"\n')

    result = project.run("migrate", "dev")

    assert result.code == 1, result.output
    assert f"{HELPER_REV} changed on disk after the gate checked it" in result.stderr
    assert project.version("dev") == [HEAD]
    assert not {"audit_notes", "sneaky"} & set(project.schema("dev"))
    assert HELPER_REV not in [r for r, _ in project.ledger("dev")]
