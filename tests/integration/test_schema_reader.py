"""The schema reader on real PostgreSQL and SQLite (SPEC Part 2 "Schema drift"): what the
canonical description holds, that it is stable, that every hand edit moves the fingerprint
and the catalog stamp, and that our own tables are not part of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from projectkit import Project

from orchestrator.schema.description import compare, fingerprint
from orchestrator.schema.reader import catalog_stamp, read_schema

PG_DDL = [
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "CREATE TABLE Users (id serial PRIMARY KEY, email varchar(255) NOT NULL, "
    "m mood DEFAULT 'happy', CONSTRAINT uq_users_email UNIQUE (email))",
    "CREATE TABLE orders (id serial PRIMARY KEY, "
    "user_id int NOT NULL REFERENCES users (id) ON DELETE CASCADE, "
    "total numeric(10, 2) NOT NULL DEFAULT 0, note text, "
    "CONSTRAINT ck_orders_total CHECK (total >= 0))",
    "CREATE INDEX ix_orders_open ON orders (user_id) WHERE note IS NULL",
    "CREATE INDEX ix_orders_note ON orders (lower(note))",
    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
    "CREATE TABLE orchestrator_ledger (id int PRIMARY KEY)",
]
SQLITE_DDL = [
    "CREATE TABLE Users (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL, "
    "m VARCHAR(5) DEFAULT 'happy', CONSTRAINT uq_users_email UNIQUE (email))",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, "
    "user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE, "
    "total NUMERIC(10, 2) NOT NULL DEFAULT 0, note TEXT, "
    "CONSTRAINT ck_orders_total CHECK (total >= 0))",
    "CREATE INDEX ix_orders_open ON orders (user_id) WHERE note IS NULL",
    "CREATE INDEX ix_orders_note ON orders (lower(note))",
    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
    "CREATE TABLE orchestrator_ledger (id int PRIMARY KEY)",
]


@pytest.fixture(params=["pg", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg":
        made: Callable[[], str] = request.getfixturevalue("pg_url_factory")
        return made()
    return f"sqlite:///{tmp_path / 'reader.db'}"


def _run(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _read(url: str) -> tuple[dict, str | None]:  # type: ignore[type-arg]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return read_schema(connection), catalog_stamp(connection)
    finally:
        engine.dispose()


def _schema(url: str) -> None:
    _run(url, *(PG_DDL if url.startswith("postgresql") else SQLITE_DDL))


def test_the_description_holds_every_part_and_none_of_ours(url: str) -> None:
    _schema(url)
    description, _ = _read(url)
    assert sorted(description["tables"]) == ["orders", "users"]  # "Users" folded, ours out
    orders = description["tables"]["orders"]
    assert [c["name"] for c in orders["columns"]] == ["id", "user_id", "total", "note"]
    total = orders["columns"][2]
    assert (total["type"], total["nullable"]) == ("NUMERIC(10,2)", False)
    assert total["default"] is not None and "0" in total["default"]
    (fk,) = orders["foreign_keys"]
    assert (fk["columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["user_id"],
        "users",
        ["id"],
    )
    assert fk["options"] == {"ondelete": "CASCADE"}
    (check,) = orders["check_constraints"]
    assert check["name"] == "ck_orders_total" and "total >= 0" in check["sqltext"]
    indexes = {i["name"]: i for i in orders["indexes"]}
    assert set(indexes) == {"ix_orders_open", "ix_orders_note"}
    assert "note IS NULL" in indexes["ix_orders_open"]["where"]
    assert indexes["ix_orders_note"]["columns"] == ["lower(note)"]
    assert orders["primary_key"]["columns"] == ["id"]
    users = description["tables"]["users"]
    assert users["unique_constraints"] == [{"name": "uq_users_email", "columns": ["email"]}]
    assert users["indexes"] == []  # the index behind the unique constraint is not an index
    if url.startswith("postgresql"):
        assert description["enums"] == {"mood": ["happy", "sad"]}
        assert users["columns"][2]["type"] == "mood"
        assert description["render"]["orders"]["total"] == "sa.NUMERIC(precision=10, scale=2)"


def test_reading_twice_gives_the_same_fingerprint_and_stamp(url: str) -> None:
    _schema(url)
    first, stamp = _read(url)
    _run(url, "INSERT INTO users (email) VALUES ('a@example.com')")  # data is not schema
    second, again = _read(url)
    assert first == second and fingerprint(first) == fingerprint(second)
    assert stamp == again and stamp is not None


PG_EDITS = [
    ("CREATE INDEX ix_users_m ON users (m)", "+ index ix_users_m on users (m)"),
    ("DROP INDEX ix_orders_open", "- index ix_orders_open on orders (user_id) where"),
    (
        "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12, 2)",
        "~ column orders.total NUMERIC(10,2) -> NUMERIC(12,2)",
    ),
    ("ALTER TABLE orders ALTER COLUMN note SET NOT NULL", "~ column orders.note NULL -> NOT NULL"),
    ("ALTER TABLE orders ALTER COLUMN total SET DEFAULT 1", "~ column orders.total DEFAULT"),
    ("ALTER TABLE orders DROP CONSTRAINT ck_orders_total", "- check ck_orders_total on orders"),
    ("ALTER TABLE orders ADD COLUMN extra int", "+ column orders.extra INTEGER"),
    ("ALTER TYPE mood ADD VALUE 'meh'", "~ enum mood ('happy', 'sad') -> ('happy', 'sad', 'meh')"),
    ("ALTER TABLE users DROP CONSTRAINT uq_users_email", "- unique uq_users_email on users"),
    (
        "ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey, ADD CONSTRAINT "
        "orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)",
        "~ foreign key orders_user_id_fkey on orders (user_id) -> users (id) ondelete CASCADE",
    ),
    ("CREATE TABLE extra (id int)", "+ table extra"),
]
SQLITE_EDITS = [
    ("CREATE INDEX ix_users_m ON users (m)", "+ index ix_users_m on users (m)"),
    ("DROP INDEX ix_orders_open", "- index ix_orders_open on orders (user_id) where"),
    ("ALTER TABLE orders ADD COLUMN extra int", "+ column orders.extra INTEGER"),
    ("CREATE TABLE extra (id int)", "+ table extra"),
    ("DROP INDEX ix_orders_note", "- index ix_orders_note on orders (lower(note))"),
]


@pytest.mark.parametrize("edit", range(len(PG_EDITS)))
def test_every_hand_edit_moves_fingerprint_and_stamp_and_is_named(url: str, edit: int) -> None:
    edits = PG_EDITS if url.startswith("postgresql") else SQLITE_EDITS
    if edit >= len(edits):
        pytest.skip("SQLite cannot alter this in place")
    statement, expected = edits[edit]
    _schema(url)
    before, stamp = _read(url)
    _run(url, statement)
    after, moved = _read(url)
    assert fingerprint(after) != fingerprint(before)
    assert moved != stamp
    lines = [d.line for d in compare(before, after)]
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_our_tables_and_alembic_version_changing_is_not_drift(url: str) -> None:
    _schema(url)
    before, _ = _read(url)
    _run(
        url,
        "ALTER TABLE orchestrator_ledger ADD COLUMN note text",
        "CREATE TABLE orchestrator_schema_extra (id int)",
        "CREATE INDEX ix_alembic_version ON alembic_version (version_num)",
    )
    after, _ = _read(url)
    assert fingerprint(after) == fingerprint(before)


# -- the whole schema (PostgreSQL) --------------------------------------------------------------

WHOLE_DDL = [
    "CREATE SEQUENCE invoice_no",
    "CREATE VIEW open_orders AS SELECT id FROM orders WHERE note IS NULL",
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "CREATE TRIGGER trg_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch()",
    "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY orders_all ON orders USING (true)",
    "COMMENT ON TABLE orders IS 'what was bought'",
    "CREATE TABLE notes (id int)",
    # ours: never part of the description
    "CREATE FUNCTION orchestrator_audit_append_only() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN RETURN NEW; END $$",
    "CREATE TRIGGER orchestrator_no_change BEFORE UPDATE ON orchestrator_ledger "
    "FOR EACH ROW EXECUTE FUNCTION orchestrator_audit_append_only()",
]
WHOLE_EDITS = [
    "ALTER SEQUENCE invoice_no INCREMENT BY 2",
    "CREATE OR REPLACE VIEW open_orders AS SELECT id FROM orders",
    "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN NULL; END $$",
    "ALTER TABLE orders DISABLE TRIGGER trg_touch",
    "ALTER TABLE orders FORCE ROW LEVEL SECURITY",
    "ALTER POLICY orders_all ON orders USING (false)",
    "COMMENT ON COLUMN orders.note IS 'free text'",
    "GRANT SELECT ON orders TO PUBLIC",
    "ALTER TABLE notes SET UNLOGGED",
    "CREATE EXTENSION {extension}",
    "CREATE SCHEMA audit",
]


@pytest.mark.parametrize("edit", range(len(WHOLE_EDITS)))
def test_every_kind_of_hand_edit_moves_the_stamp(pg_db: str, edit: int) -> None:
    """The stamp stands in for a read while it does not move: every kind of object must
    move it."""
    _run(pg_db, *PG_DDL, *WHOLE_DDL)
    engine = sa.create_engine(pg_db)
    try:
        with engine.connect() as connection:
            before = read_schema(connection, ["public", "audit"])
            stamp = catalog_stamp(connection, ["public", "audit"])
            available = {
                r[0] for r in connection.exec_driver_sql("SELECT name FROM pg_available_extensions")
            }
            connection.rollback()
            extension = next(e for e in ("pg_trgm", "citext", "hstore") if e in available)
            connection.exec_driver_sql(WHOLE_EDITS[edit].format(extension=extension))
            connection.commit()
            after = read_schema(connection, ["public", "audit"])
            moved = catalog_stamp(connection, ["public", "audit"])
    finally:
        engine.dispose()
    assert moved != stamp
    assert len(compare(before, after)) == 1, [d.line for d in compare(before, after)]
    functions = after["functions"]
    assert list(functions) == ["touch()"]  # neither ours nor an extension's
    assert "orchestrator_no_change on orchestrator_ledger" not in after["triggers"]


# Every construct the table part of a description records, for the catalog read (issue 33:
# three pg_catalog queries) against SQLAlchemy's reflection, which wrote every record so far.
RICH_DDL = [
    "CREATE SCHEMA audit",
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "CREATE TYPE audit.level AS ENUM ('low', 'high')",
    "CREATE DOMAIN posint AS integer NOT NULL DEFAULT 1 CHECK (VALUE > 0)",
    "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    "CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "email varchar(255) COLLATE ci NOT NULL, name text COLLATE \"C\", m mood DEFAULT 'happy', "
    "score posint, rank posint DEFAULT 5, tags text[], at timestamp(3) with time zone, "
    "span interval hour to minute, b bit varying(8), d double precision, r real, "
    "j jsonb DEFAULT '{}'::jsonb, u uuid, c char(3), n numeric, n2 numeric(12, 4), "
    "doubled int GENERATED ALWAYS AS (score * 2) STORED, lvl audit.level, "
    "CONSTRAINT uq_users_email UNIQUE NULLS NOT DISTINCT (email) INCLUDE (name), "
    "CONSTRAINT ck_named CHECK ((score > 0) AND (rank < 100)) NO INHERIT)",
    "CREATE TABLE orders (id serial, k int, user_id bigint, other bigint, "
    "note text, total numeric(10, 2) DEFAULT 0, PRIMARY KEY (id, k), "
    "FOREIGN KEY (user_id) REFERENCES users (id) MATCH FULL ON UPDATE CASCADE "
    "ON DELETE SET NULL (user_id) DEFERRABLE INITIALLY DEFERRED, "
    "CONSTRAINT fk_other FOREIGN KEY (other) REFERENCES users (id) ON DELETE RESTRICT, "
    "CHECK (total >= 0), UNIQUE (k, note))",
    "ALTER TABLE orders ADD CONSTRAINT ck_late CHECK (k <> 7) NOT VALID",
    "CREATE INDEX ix_expr ON orders (lower(note) DESC NULLS LAST, k NULLS FIRST) "
    "WHERE note IS NOT NULL AND k > 2",
    "CREATE UNIQUE INDEX ix_ops ON orders (note text_pattern_ops, (k + 1)) "
    "INCLUDE (total) WITH (fillfactor = 70)",
    "CREATE INDEX ix_hash ON orders USING hash (note)",
    "CREATE INDEX ix_gin ON users USING gin (tags)",
    "CREATE UNIQUE INDEX ix_nnd ON users (name) NULLS NOT DISTINCT",
    "CREATE TABLE empty_one ()",
    "CREATE TABLE parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
    "CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "CREATE TABLE audit.events (id serial PRIMARY KEY, user_id bigint REFERENCES public.users, "
    "lvl audit.level, m mood)",
    "CREATE TABLE audit.links (id int REFERENCES audit.events ON DELETE CASCADE)",
    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
]


@pytest.mark.parametrize("schemas", [None, ["public", "audit"], ["audit", "public"]])
def test_the_catalog_read_is_what_reflection_read(
    pg_db: str, schemas: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.schema import pg_tables

    _run(pg_db, *RICH_DDL)
    engine = sa.create_engine(pg_db)
    try:
        with engine.connect() as connection:
            catalog = read_schema(connection, schemas)
            with monkeypatch.context() as patched:
                patched.setattr(pg_tables, "supported", lambda _connection: False)
                reflected = read_schema(connection, schemas)
    finally:
        engine.dispose()
    public = catalog if schemas != ["audit", "public"] else catalog["schemas"]["public"]
    assert len(public["tables"]["orders"]["indexes"]) == 3, "the rich schema was read"
    assert catalog == reflected


def test_the_catalog_read_is_what_reflection_read_after_the_shipped_history(
    pg_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records runs have written so far (the shipped revisions, our own tables in the same
    database) read the same: no description moves because of how it is read."""
    from orchestrator.schema import pg_tables

    assert pg_project.run("migrate", "dev").code == 0
    engine = pg_project.engine("dev")
    try:
        with engine.connect() as connection:
            catalog = read_schema(connection)
            with monkeypatch.context() as patched:
                patched.setattr(pg_tables, "supported", lambda _connection: False)
                reflected = read_schema(connection)
    finally:
        engine.dispose()
    assert "users" in catalog["tables"]
    assert catalog == reflected
    recorded = pg_project.query("dev", "SELECT fingerprint FROM orchestrator_schema ORDER BY id")
    assert recorded[-1][0] == fingerprint(reflected)


def test_a_listed_system_schema_is_stamped_to_its_initdb_objects(pg_db: str) -> None:
    """User objects have OIDs from 16384 up and are read by index; a listed system schema's
    own functions (below 16384) are stamped too: changing one moves the stamp."""
    engine = sa.create_engine(pg_db)
    try:
        with engine.connect() as connection:
            listed = ["public", "pg_catalog"]
            stamp = catalog_stamp(connection, listed)
            assert catalog_stamp(connection, ["public"]) != stamp
            connection.exec_driver_sql("ALTER FUNCTION pg_catalog.lower(text) COST 2")
            connection.commit()
            assert catalog_stamp(connection, listed) != stamp
    finally:
        engine.dispose()
