"""Throwaway Alembic projects for the benchmark, under bench/.work/ (git-ignored).

For each N two copies of the same linear history (N revisions, each a small table and an
index):

- `orch/`: set up like this repository (alembic.ini, an env.py that calls
  `orchestrator.alembic_env.run_migrations`, a models module, environments/ dev -> staging
  -> prod with `policy.lint: off` and `require_approval: false`);
- `bare/`: made by `alembic init -t generic`, the stock env.py with its own engine and
  `sqlalchemy.url` in alembic.ini: nothing of the orchestrator runs there.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
VENV_BIN = Path(os.environ.get("BENCH_BIN") or REPO / ".venv" / "bin").resolve()

ORCH_INI = """[alembic]
script_location = %(here)s/alembic
prepend_sys_path = %(here)s
path_separator = os
file_template = %%(rev)s_%%(slug)s
"""

ORCH_ENV_PY = '''"""Alembic environment: plain `alembic` and the orchestrator run through here."""

from bench_models import metadata
from orchestrator.alembic_env import run_migrations

run_migrations(target_metadata=metadata)
'''

MODELS_PY = '''"""The benchmark application's models: none (the history is hand-written)."""

from sqlalchemy import MetaData

metadata = MetaData()
'''

ENVS = {
    "dev": """name: dev
database:
  url_env: DEV_DATABASE_URL
lock:
  timeout: 900
policy:
  require_approval: false
  allow_downgrade: true
  lint: "off"
""",
    "staging": """name: staging
promotes_from: dev
database:
  url_env: STAGING_DATABASE_URL
lock:
  timeout: 900
policy:
  require_approval: false
  allow_downgrade: true
  lint: "off"
session:
  lock_timeout: 5s
  statement_timeout: 15min
""",
    "prod": """name: prod
promotes_from: staging
database:
  url_env: PROD_DATABASE_URL
lock:
  timeout: 900
policy:
  require_approval: false
  allow_downgrade: false
  lint: "off"
session:
  lock_timeout: 5s
  statement_timeout: 15min
""",
}

REVISION = '''"""create table t_{i:05d}

Revision ID: {rev}
Revises: {down_doc}
Create Date: 2024-01-01 00:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = {rev!r}
down_revision: str | Sequence[str] | None = {down!r}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "t_{i:05d}",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_t_{i:05d}_name", "t_{i:05d}", ["name"])


def downgrade() -> None:
    op.drop_index("ix_t_{i:05d}_name", table_name="t_{i:05d}")
    op.drop_table("t_{i:05d}")
'''


def rev_id(i: int) -> str:
    return hashlib.sha1(f"bench-revision-{i}".encode()).hexdigest()[:12]


@dataclass
class BenchProject:
    n: int
    root: Path
    orch: Path
    bare: Path
    bare_tpm: Path
    head: str
    offline_sql: Path
    key_env: dict[str, str]  # BENCH_<ENV>_KEY -> the private key file of each environment

    @property
    def revisions(self) -> list[str]:
        return [rev_id(i) for i in range(1, self.n + 1)]


def write_versions(versions: Path, n: int) -> str:
    versions.mkdir(parents=True, exist_ok=True)
    down = None
    for i in range(1, n + 1):
        rev = rev_id(i)
        (versions / f"{rev}_create_table_t_{i:05d}.py").write_text(
            REVISION.format(i=i, rev=rev, down=down, down_doc=down or ""), encoding="utf-8"
        )
        down = rev
    assert down is not None
    return down


def make_project(n: int, bare_url: str, name: str | None = None) -> BenchProject:
    root = WORK / (name or f"n{n}")
    if root.exists():
        shutil.rmtree(root)
    orch, bare = root / "orch", root / "bare"

    # -- the orchestrator's copy, laid out like this repository -----------------------------
    (orch / "alembic").mkdir(parents=True)
    (orch / "alembic.ini").write_text(ORCH_INI, encoding="utf-8")
    (orch / "alembic" / "env.py").write_text(ORCH_ENV_PY, encoding="utf-8")
    shutil.copy(REPO / "alembic" / "script.py.mako", orch / "alembic" / "script.py.mako")
    (orch / "bench_models.py").write_text(MODELS_PY, encoding="utf-8")
    (orch / "environments").mkdir()
    # every environment signs its ledger and audit checkpoints, as a careful team's would:
    # the trust features are on in every timing (bench/signing.py measures them off too)
    key_env = {}
    for name, text in ENVS.items():
        key_env[f"BENCH_{name.upper()}_KEY"] = str(write_keys(orch / "keys", name))
        signed = text + SIGNING.format(pub=orch / "keys" / f"{name}.pub", name=name.upper())
        (orch / "environments" / f"{name}.yaml").write_text(signed, encoding="utf-8")
    head = write_versions(orch / "alembic" / "versions", n)

    # -- bare Alembic: the stock generic template, its own engine --------------------------
    bare.mkdir(parents=True)
    subprocess.run(
        [str(VENV_BIN / "alembic"), "init", "-t", "generic", "alembic"],
        cwd=bare,
        check=True,
        capture_output=True,
        text=True,
    )
    ini = (bare / "alembic.ini").read_text(encoding="utf-8")
    ini, count = re.subn(r"(?m)^sqlalchemy\.url = .*$", f"sqlalchemy.url = {bare_url}", ini)
    assert count == 1, "alembic.ini of the generic template has no sqlalchemy.url line"
    (bare / "alembic.ini").write_text(ini, encoding="utf-8")
    shutil.copytree(
        orch / "alembic" / "versions", bare / "alembic" / "versions", dirs_exist_ok=True
    )

    # -- the same, one transaction per revision (what the orchestrator does on PostgreSQL) -----
    bare_tpm = root / "bare_tpm"
    shutil.copytree(bare, bare_tpm)
    env_py = (bare_tpm / "alembic" / "env.py").read_text(encoding="utf-8")
    old = "connection=connection, target_metadata=target_metadata\n"
    assert old in env_py, "unexpected generic env.py"
    env_py = env_py.replace(
        old,
        "connection=connection, target_metadata=target_metadata,\n"
        "            transaction_per_migration=True,\n",
    )
    (bare_tpm / "alembic" / "env.py").write_text(env_py, encoding="utf-8")

    # -- the physical limit: Alembic's offline SQL, for `psql -1 -f` --------------------------
    done = subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head", "--sql"],
        cwd=bare,
        check=True,
        capture_output=True,
        text=True,
    )
    # psql -1 wraps the file in one transaction itself; drop Alembic's BEGIN/COMMIT.
    sql = "\n".join(
        line for line in done.stdout.splitlines() if line.strip() not in ("BEGIN;", "COMMIT;")
    )
    offline = root / "upgrade.sql"
    offline.write_text(sql + "\n", encoding="utf-8")
    return BenchProject(n, root, orch, bare, bare_tpm, head, offline, key_env)


SIGNING = "signing:\n  public_key: {pub}\n  key_env: BENCH_{name}_KEY\n"


def write_keys(directory: Path, name: str) -> Path:
    """A new Ed25519 key pair for `name` in `directory`; the private key's path."""
    from orchestrator.core import signing

    directory.mkdir(parents=True, exist_ok=True)
    private, public = signing.generate()
    (directory / f"{name}.pub").write_bytes(public)
    (directory / f"{name}.key").write_bytes(private)
    return directory / f"{name}.key"


def per_run_environments(orch_dir: Path) -> Path:
    """A copy of the bench project's environments with `transaction: per-run` (one
    transaction around a whole run, as bare Alembic does by default)."""
    target = orch_dir / "environments_per_run"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(orch_dir / "environments", target)
    for path in target.glob("*.yaml"):
        path.write_text(path.read_text(encoding="utf-8") + "transaction: per-run\n", "utf-8")
    return target
