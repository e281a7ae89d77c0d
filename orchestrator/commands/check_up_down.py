"""`check`'s up_down_consistency: each revision upgraded, downgraded, upgraded again."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
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


def check_up_down(
    app: App, scratch_url: str | None, head: str, skip: Collection[str] = ()
) -> list[Finding]:
    """Upgrade, downgrade and upgrade again each revision, oldest first, on a scratch
    database. `skip`: revisions already named for having no downgrade (upgraded only).

    A revision whose upgrade fails is left to models_match_migrations, which names it; a
    downgrade that raises NotImplementedError says it cannot be undone, and is taken at its
    word."""
    from orchestrator.db.database import current_heads, make_engine, safe_url

    with tempfile.TemporaryDirectory(prefix="orchestrator-check-") as tmp:
        url = scratch_url or f"sqlite:///{Path(tmp) / 'up-down.db'}"
        where = safe_url(url) if scratch_url else "a scratch SQLite database"
        engine = make_engine(url, "orchestrator check")
        try:
            with engine.connect() as connection:
                heads = current_heads(connection)
                connection.rollback()
                try:
                    revisions = app.graph.upgrade_path(heads, head)
                except RevisionsError:
                    return []  # models_match_migrations says why
                for rev in revisions:
                    problem = _up_down_up(app, connection, rev, rev in skip)
                    if problem:
                        path = app.graph.get(rev).path.name
                        return [
                            {
                                "check": "up_down_consistency",
                                "revision": rev,
                                "message": f"revision {rev} ({path}): {problem} on {where}. "
                                "Its downgrade() must undo exactly what its upgrade() did, so "
                                "that upgrading again works."
                                + (
                                    " The models were not compared: that database is left at "
                                    "this revision."
                                    if scratch_url
                                    else ""
                                ),
                            }
                        ]
        except SQLAlchemyError as exc:
            raise MigrationFailed(
                f"check: cannot use the scratch database {safe_url(url)}: {describe_error(exc)}"
            ) from None
        finally:
            engine.dispose()
    return []


def _up_down_up(app: App, connection: Any, rev: str, up_only: bool) -> str | None:
    """What went wrong running `rev` up, down, up; None when all three worked."""
    if _run_one(app, connection, rev, "up") is not None or up_only:
        return None  # its upgrade failing is models_match_migrations' finding
    error = _run_one(app, connection, rev, "down")
    if isinstance(error, NotImplementedError):
        return None  # irreversible, and says so loudly: downgrade_does_something accepts it
    if error is not None:
        return f"its downgrade() fails right after its upgrade(): {describe_error(error)}"
    error = _run_one(app, connection, rev, "up")
    if error is not None:
        return (
            "upgrading it again after its downgrade() fails, so the downgrade left part of "
            f"the upgrade behind: {describe_error(error)}"
        )
    return None


def _run_one(app: App, connection: Any, rev: str, direction: str) -> Exception | None:
    try:
        with quiet_alembic():  # a scratch database: its progress is noise
            app.project.run(connection, [rev], direction, lambda **_: None)
    except UsageError:
        raise  # env.py's error, or a revision that cannot be imported: said once, exit 2
    except Exception as exc:  # the revision's own error, whatever it is
        connection.rollback()
        return exc
    return None
