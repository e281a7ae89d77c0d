"""`check`'s models_match_migrations: the schema the migrations build against the models."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.errors import MigrationFailed, UsageError
from orchestrator.core.logging import quiet_alembic
from orchestrator.db.database import describe_error
from orchestrator.migrations.revisions.errors import RevisionsError

if TYPE_CHECKING:
    from orchestrator.commands.check import Finding
    from orchestrator.running.app import App


def check_models(app: App, scratch_url: str | None, head: str) -> list[Finding]:
    from orchestrator.db.database import current_heads, make_engine, safe_url

    with tempfile.TemporaryDirectory(prefix="orchestrator-check-") as tmp:
        url = scratch_url or f"sqlite:///{Path(tmp) / 'scratch.db'}"
        where = safe_url(url) if scratch_url else "a scratch SQLite database"
        engine = make_engine(url, "orchestrator check")
        try:
            with engine.connect() as connection:
                heads = current_heads(connection)
                connection.rollback()
                try:
                    revisions = app.graph.upgrade_path(heads, head)
                except RevisionsError as exc:
                    return [
                        _models_finding(
                            f"{where} is at {', '.join(heads)}, which cannot be upgraded to "
                            f"{head}: {exc}. Give --scratch-url an empty database."
                        )
                    ]
                if revisions:
                    failed = _upgrade(app, connection, revisions)
                    if failed:
                        return [
                            _models_finding(
                                f"upgrading {where} to head failed: {failed}. Fix that revision: "
                                "the migrations must build the schema from an empty database."
                            )
                        ]
                with quiet_alembic():
                    diffs = app.project.compare_models(connection)
                connection.rollback()
        except SQLAlchemyError as exc:
            raise MigrationFailed(
                f"check: cannot use the scratch database {safe_url(url)}: {describe_error(exc)}"
            ) from None
        finally:
            engine.dispose()
    if diffs is None:
        import structlog

        structlog.get_logger("orchestrator").warning(
            "check.skipped",
            check="models_match_migrations",
            reason=(
                "env.py passes target_metadata=None: there are no models to compare the "
                "migrations with"
            ),
        )
        return []
    if not diffs:
        return []
    flat = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
    lines = [describe_diff(d) for d in flat]
    return [
        {
            "check": "models_match_migrations",
            "message": (
                f"the models and the schema the migrations build differ ({len(lines)} "
                f"difference(s)): {'; '.join(lines)}. Write a migration for these changes "
                '(`make revision m="..." AUTOGEN=1`, i.e. `alembic revision --autogenerate`, then '
                "review it), or bring the models back in line with the migrations."
            ),
            "differences": lines,
        }
    ]


def _models_finding(message: str) -> Finding:
    return {"check": "models_match_migrations", "message": message}


def _upgrade(app: App, connection: Any, revisions: Sequence[str]) -> str | None:
    """Upgrade the scratch database; a description of the failure, or None."""

    applied: list[str] = []

    def hook(**kwargs: Any) -> None:
        applied.append(kwargs["step"].up_revision_id)

    try:
        with quiet_alembic():  # a scratch database: its progress is noise
            app.project.run(connection, revisions, "up", hook)
    except UsageError:
        raise  # env.py's error, or a revision that cannot be imported: said once, exit 2
    except Exception as exc:  # the revision's own error, whatever it is
        connection.rollback()
        failed = next((r for r in revisions if r not in applied), revisions[-1])
        return f"revision {failed}: {describe_error(exc)}"
    return None


def _name(obj: Any) -> str:
    table = getattr(obj, "table", None)
    name = getattr(obj, "name", None) or "(unnamed)"
    return f"{table.name}.{name}" if table is not None and hasattr(table, "name") else str(name)


def _columns(obj: Any) -> str:
    cols = getattr(obj, "columns", None)
    try:
        return "(" + ", ".join(c.name for c in cols) + ")" if cols is not None else ""
    except TypeError:
        return ""


def _show(value: Any) -> str:
    from sqlalchemy.types import TypeEngine

    if isinstance(value, TypeEngine):
        return str(value)
    text = getattr(value, "arg", None)  # a server default
    return str(getattr(text, "text", text)) if text is not None else str(value)


def describe_diff(diff: Any) -> str:
    """One of autogenerate's diff tuples (or a list of modify_* tuples) in plain words."""
    if isinstance(diff, list):
        return "; ".join(describe_diff(d) for d in diff)
    kind = diff[0]
    models = "in the models but no migration creates it"
    migrations = "created by the migrations but not in the models"
    if kind in ("add_table", "remove_table"):
        return f"table {diff[1].name} is {models if kind == 'add_table' else migrations}"
    if kind in ("add_column", "remove_column"):
        _, _schema, table, column = diff
        where = models if kind == "add_column" else migrations
        return f"column {table}.{column.name} ({column.type}) is {where}"
    nouns = {"index": "index", "constraint": "constraint", "fk": "foreign key"}
    if kind.startswith(("add_", "remove_")) and kind.split("_", 1)[1] in nouns:
        noun = nouns[kind.split("_", 1)[1]]
        unique = "unique " if getattr(diff[1], "unique", False) and noun == "index" else ""
        where = models if kind.startswith("add") else migrations
        return f"{unique}{noun} {_name(diff[1])} {_columns(diff[1])} is {where}".replace("  ", " ")
    if kind.startswith("modify_"):
        _, _schema, table, column, _existing, old, new = diff
        what = kind.removeprefix("modify_")
        if what == "nullable":
            old, new = ("NULL" if v else "NOT NULL" for v in (old, new))
        return (
            f"column {table}.{column}: {what} is {_show(old)} in the migrations, "
            f"{_show(new)} in the models"
        )
    return f"{kind}: {diff[1:]!r}"
