"""`init`'s decisions as plain data: dev's database, .gitignore, PostgreSQL-only revisions,
the shape of env.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.commands.init_env_py import hand_over, is_flask_migrate
from orchestrator.commands.init_files import (
    dev_database,
    dev_notes,
    environment_file,
    gitignore_action,
    ini_url,
)
from orchestrator.core.config import parse_environment
from orchestrator.migrations.postgresql_only import constructs_in


def write_ini(tmp_path: Path, url: str | None) -> Path:
    ini = tmp_path / "alembic.ini"
    line = f"sqlalchemy.url = {url}\n" if url is not None else ""
    ini.write_text(f"[alembic]\nscript_location = %(here)s/alembic\n{line}")
    return ini


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, None),
        ("", None),
        ("driver://user:pass@localhost/dbname", None),  # alembic init's placeholder
        ("postgresql://app@db/shop", "postgresql://app@db/shop"),
        ("sqlite:///%(here)s/app.db", "sqlite:///{here}/app.db"),
        ("postgresql://app:p%%40ss@db/shop", "postgresql://app:p%40ss@db/shop"),
    ],
)
def test_ini_url_reads_sqlalchemy_url(
    tmp_path: Path, url: str | None, expected: str | None
) -> None:
    found = ini_url(write_ini(tmp_path, url))
    assert found == (expected.format(here=tmp_path) if expected else None)


def test_dev_keeps_the_database_of_alembic_ini() -> None:
    dev = dev_database("dev", "postgresql+psycopg://app@localhost/shop_dev", None)
    text = environment_file("dev", None, False, dev)
    env = parse_environment(text, "dev.yaml")
    assert env.database.url == "postgresql+psycopg://app@localhost/shop_dev"
    assert env.database.url_env == "DEV_DATABASE_URL"
    assert "sqlalchemy.url of alembic.ini" in text
    notes = dev_notes("dev", "postgresql+psycopg://app@localhost/shop_dev", None, False)
    assert "sqlalchemy.url" in notes[0]


def test_a_password_never_reaches_an_environment_file() -> None:
    url = "postgresql+psycopg://app:s3cret-pw@localhost/shop_dev"
    dev = dev_database("dev", url, None)
    text = environment_file("dev", None, False, dev)
    assert "s3cret" not in text
    env = parse_environment(text, "dev.yaml")
    assert env.database.url is None and env.database.url_env == "DEV_DATABASE_URL"
    notes = " ".join(dev_notes("dev", url, None, False))
    assert "DEV_DATABASE_URL" in notes and "password" in notes and "s3cret" not in notes


def test_a_postgresql_only_history_gets_no_sqlite_default() -> None:
    dev = dev_database("dev", None, "a1 (a1_x.py, line 9: CREATE EXTENSION)")
    text = environment_file("dev", None, False, dev)
    assert "sqlite" not in text and parse_environment(text, "dev.yaml").database.url is None
    notes = " ".join(dev_notes("dev", None, "a1 (a1_x.py, line 9: CREATE EXTENSION)", False))
    assert "needs a PostgreSQL URL" in notes and "CREATE EXTENSION" in notes
    plain = dev_database("dev", None, None)
    assert plain.url == "sqlite:///.orchestrator/dev.db"


def test_generated_files_have_the_shape_of_the_shipped_ones() -> None:
    dev = dev_database("dev", None, None)
    envs = {
        name: yaml.safe_load(environment_file(name, pred, last, dev))
        for name, pred, last in (
            ("dev", None, False),
            ("staging", "dev", False),
            ("prod", "staging", True),
        )
    }
    shipped = {
        p.stem: yaml.safe_load(p.read_text())
        for p in (Path(__file__).resolve().parents[2] / "environments").glob("*.yaml")
    }
    for name in ("dev", "staging", "prod"):
        assert envs[name].get("promotes_from") == shipped[name].get("promotes_from")
        assert envs[name]["policy"] == shipped[name]["policy"], name
        assert envs[name]["database"] == shipped[name]["database"], name


@pytest.mark.parametrize(
    ("existing", "added"),
    [
        (None, ".orchestrator/\n__pycache__/\n"),
        ("*.pyc\n.env", "*.pyc\n.env\n.orchestrator/\n__pycache__/\n"),
        ("/.orchestrator\n**/__pycache__/\n", None),
        (".orchestrator/\n", ".orchestrator/\n__pycache__/\n"),
    ],
)
def test_gitignore_gets_what_git_must_not_see(
    tmp_path: Path, existing: str | None, added: str | None
) -> None:
    if existing is not None:
        (tmp_path / ".gitignore").write_text(existing)
    action = gitignore_action(tmp_path)
    if added is None:
        assert action is None
    else:
        assert action is not None and action.content == added
        assert action.action == ("write" if existing is None else "add to")


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("from sqlalchemy.dialects import postgresql", "the postgresql dialect"),
        ("import sqlalchemy.dialects.postgresql as pg", "the postgresql dialect"),
        ('op.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")', "CREATE EXTENSION"),
        ("server_default=sa.text('gen_random_uuid()')", "gen_random_uuid()"),
        ('op.execute("UPDATE t SET k = id::text")', "a :: cast"),
        ('op.alter_column("t", "k", postgresql_using="k::uuid")', "a :: cast"),
    ],
)
def test_postgresql_only_constructs_are_named(line: str, what: str) -> None:
    assert constructs_in(f"x = 1\n{line}\n") == [(2, what)]


@pytest.mark.parametrize(
    "line",
    [
        "op.create_table('t', sa.Column('id', sa.Integer, primary_key=True))",
        "# we once used CREATE EXTENSION here",
        "items = rows[i::step]",
        "op.create_index('ix', 't', ['a'], postgresql_concurrently=True)",
    ],
)
def test_portable_revisions_are_not_postgresql_only(line: str) -> None:
    assert constructs_in(line + "\n") == []


def test_env_py_shapes() -> None:
    stock = (
        "from alembic import context\ntarget_metadata = None\n\n"
        "if context.is_offline_mode():\n    run_migrations_offline()\n"
        "else:\n    run_migrations_online()\n"
    )
    assert hand_over(stock) is not None and not is_flask_migrate(stock)
    assert is_flask_migrate("from flask import current_app\n" + stock)
    assert hand_over("context.configure(url='x')\n") is None
    commented = stock.replace("target_metadata = None", "# target_metadata = mymodel.metadata")
    assert hand_over(commented) is None  # run_migrations(target_metadata) would not run
