"""Schema drift benchmark (issue 14): the fingerprint of a 1,000-table schema on PostgreSQL,
and what the drift check adds to a no-op `migrate` (schema_drift warn vs off).

The fingerprint is timed in this process after a warm-up (imports and the dialect's first
reflection excluded), as the orchestrator pays it inside a run: read the catalog in a few
pg_catalog queries for every table of the listed schemas (columns, keys and constraints,
indexes; SQLAlchemy reflects only the few tables that show each distinct column type) and one
query for everything else (views, sequences, functions, triggers, policies, grants, owners,
default privileges, comments, extensions: issue 33), build the canonical description, hash it.
Every table's serial sequence is part of it. The catalog stamp (one query) is what a no-op
migrate and `status` pay instead while nothing changed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from statistics import median
from typing import Any

TABLES = 1000
TARGET_SECONDS = 0.5


def _create_schema(url: str, tables: int) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TYPE mood AS ENUM ('happy', 'sad'); "
                "CREATE TABLE users (id serial PRIMARY KEY, email varchar(255) NOT NULL UNIQUE)"
            )
            for i in range(tables - 1):
                connection.exec_driver_sql(
                    f"CREATE TABLE t_{i:04d} (id serial PRIMARY KEY, "
                    "user_id int NOT NULL REFERENCES users (id) ON DELETE CASCADE, "
                    "name varchar(100) NOT NULL, total numeric(10, 2) DEFAULT 0, "
                    "m mood, created_at timestamptz NOT NULL DEFAULT now(), "
                    f"CONSTRAINT ck_t_{i:04d}_total CHECK (total >= 0)); "
                    f"CREATE INDEX ix_t_{i:04d}_name ON t_{i:04d} (name) WHERE total > 0"
                )
    finally:
        engine.dispose()


def fingerprint_times(url: str, reps: int) -> tuple[list[float], list[float]]:
    import sqlalchemy as sa

    from orchestrator.schema.description import fingerprint
    from orchestrator.schema.reader import catalog_stamp, read_schema

    engine = sa.create_engine(url)
    full, stamp = [], []
    try:
        with engine.connect() as connection:
            fingerprint(read_schema(connection))  # warm-up
            connection.rollback()
            for _ in range(reps):
                t0 = time.perf_counter()
                fingerprint(read_schema(connection))
                full.append(time.perf_counter() - t0)
                connection.rollback()
                t0 = time.perf_counter()
                catalog_stamp(connection)
                stamp.append(time.perf_counter() - t0)
                connection.rollback()
    finally:
        engine.dispose()
    return full, stamp


def no_drift_environments(orch_dir: Path) -> Path:
    """A copy of the bench project's environments with `schema_drift: off`."""
    target = orch_dir / "environments_schema_off"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(orch_dir / "environments", target)
    for path in target.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace('lint: "off"', 'lint: "off"\n  schema_drift: "off"'), encoding="utf-8"
        )
    return target


def schema_bench(cluster: Any, reps: int, log: Any) -> tuple[str, list[str], float]:
    """Run the fingerprint rows; the markdown section, the summary lines and the
    fingerprint's median seconds."""
    name = "schema_1000"
    cluster.recreate(name)
    log(f"\n== schema fingerprint: {TABLES} tables on PostgreSQL")
    _create_schema(cluster.url(name), TABLES)
    full, stamp = fingerprint_times(cluster.url(name), max(reps, 5))
    met = "yes" if median(full) <= TARGET_SECONDS else "**NO**"
    log(f"  fingerprint: median {median(full):.3f}s; catalog stamp: median {median(stamp):.3f}s")
    section = "\n".join(
        [
            "## Schema fingerprint (issue 14)",
            "",
            f"A schema of {TABLES:,} tables (each: serial primary key, foreign key with ON "
            "DELETE, varchar, numeric with a default, an enum column, timestamptz with a "
            "default, a check constraint and a partial index). Timed in-process after a "
            f"warm-up, {len(full)} repetitions. `fingerprint` reads the catalog in a few "
            "pg_catalog queries for all tables at once (issue 33; before, SQLAlchemy's "
            "reflection, one query per kind of object and much Python), builds the canonical "
            "description and hashes it (what a run pays once it applied something; also views, "
            "sequences, functions, triggers, policies, grants, owners, default privileges, "
            "comments and extensions, in one more query); `catalog stamp` is the one query "
            "that a no-op migrate and `status` run instead while the schema is the recorded one.",
            "",
            "| measurement | median (s) | min-max (s) | target | met |",
            "|---|---:|---:|---:|:---:|",
            f"| fingerprint, {TABLES:,} tables | {median(full):.3f} | "
            f"{min(full):.3f}-{max(full):.3f} | ≤ {TARGET_SECONDS} | {met} |",
            f"| catalog stamp, {TABLES:,} tables | {median(stamp):.3f} | "
            f"{min(stamp):.3f}-{max(stamp):.3f} | | |",
            "",
            "",
        ]
    )
    cluster.drop_database(name)
    summary = [
        f"{'':>5}  {'schema fingerprint, 1,000 tables (s)':<52} {median(full):8.3f}"
        f"{'':>16}  <= {TARGET_SECONDS} {'ok' if met == 'yes' else 'NOT MET'}"
    ]
    return section, summary, median(full)
