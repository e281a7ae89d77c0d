"""`orchestrator check`: the invariants a CI job enforces on the revision history.

Each check is named after the invariant it protects (as pytest-alembic names its tests):

- ``single_head``: the history has exactly one head;
- ``downgrade_does_something``: every revision that changes something can be reverted;
- ``up_down_consistency``: on a scratch database, each revision in turn is upgraded,
  downgraded and upgraded again (pytest-alembic's test of that name): a downgrade that fails,
  or that leaves behind something its upgrade then trips over, is named;
- ``models_match_migrations``: upgrading an empty (scratch) database to head yields the
  schema of the models, as Alembic's autogenerate sees it;
- ``lint``: the PostgreSQL SQL of every revision passes squawk under the strictest
  environment's policy (waived findings are not findings).

No shared database and no URL variable is needed: the scratch database is a temporary SQLite
file unless ``--scratch-url`` names one.
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.config import given_url
from orchestrator.core.errors import MigrationFailed, UsageError
from orchestrator.core.logging import quiet_alembic
from orchestrator.db.database import describe_error
from orchestrator.migrations.revisions.errors import RevisionsError
from orchestrator.migrations.revisions.functions import does_nothing, find_function
from orchestrator.migrations.revisions.static import RevisionFile

if TYPE_CHECKING:
    from orchestrator.core.config import EnvironmentConfig
    from orchestrator.running.app import App

Finding = dict[str, Any]


def run_checks(app: App, scratch_url: str | None) -> list[Finding]:
    app.project.script  # noqa: B018 -- a revision that fails to import: named, exit 2
    if scratch_url:  # as an environment's URL: a raw `@` in its password never shown
        scratch_url = given_url(scratch_url, "--scratch-url")
        require_empty(scratch_url)
    findings: list[Finding] = []
    heads = list(app.graph.real_heads())
    findings += check_single_head(app, heads)
    findings += check_downgrades(app)
    no_downgrade = {f["revision"] for f in findings if f["check"] == "downgrade_does_something"}
    up_down = check_up_down(app, scratch_url, "heads" if len(heads) > 1 else "head", no_downgrade)
    models = []
    if not (up_down and scratch_url):  # a --scratch-url database is left mid-way: not comparable
        models = check_models(app, scratch_url, "heads" if len(heads) > 1 else "head")
    if (up_down or models) and not scratch_url:
        require_postgresql_if_needed(app)  # not the revisions' fault: SQLite cannot run them
    findings += up_down + models
    findings += check_lint(app, "heads" if len(heads) > 1 else "head")
    return findings


def require_postgresql_if_needed(app: App) -> None:
    """A history written for PostgreSQL failed on the SQLite scratch database: that is no
    finding against its revisions, check needs a PostgreSQL scratch database (exit 2)."""
    from orchestrator.migrations.postgresql_only import postgresql_only, summary

    found = postgresql_only((r.revision, r.path) for r in app.graph)
    if found:
        raise UsageError(
            "check: these revisions use PostgreSQL-only constructs, which the scratch SQLite "
            f"database cannot run: {summary(found)}. That is no fault of theirs: give check "
            "an empty PostgreSQL database made for the purpose, `orchestrator check "
            "--scratch-url postgresql+psycopg://USER@HOST/check_scratch` (in CI, a service "
            "container), and set your dev environment's URL to PostgreSQL too."
        )


# -- single_head -------------------------------------------------------------------------------


def check_single_head(app: App, heads: Sequence[str]) -> list[Finding]:
    if len(heads) <= 1:
        return []
    listed = ", ".join(f"{h} ({app.graph.get(h).doc or 'no message'})" for h in heads)
    return [
        {
            "check": "single_head",
            "message": (
                f"the revision history has {len(heads)} heads: {listed}. Two branches were written "
                'in parallel; merge them with `alembic merge heads -m "merge heads"` and commit '
                "the merge revision."
            ),
            "heads": list(heads),
        }
    ]


# -- downgrade_does_something ------------------------------------------------------------------


def check_downgrades(app: App) -> list[Finding]:
    findings = []
    for revision in app.graph:
        problem = _downgrade_problem(revision)
        if problem:
            findings.append(
                {
                    "check": "downgrade_does_something",
                    "revision": revision.revision,
                    "message": f"revision {revision.revision} ({revision.path.name}) {problem}",
                }
            )
    return findings


def _downgrade_problem(revision: RevisionFile) -> str | None:
    try:
        tree = ast.parse(revision.path.read_bytes(), filename=str(revision.path))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot be parsed: {exc}."
    downgrade = find_function(tree, "downgrade")
    if not does_nothing(downgrade):
        return None
    if does_nothing(find_function(tree, "upgrade")):
        return None  # a merge point or a no-op revision: nothing to revert
    what = "has no downgrade()" if downgrade is None else "has a downgrade() that does nothing"
    return (
        f"{what}, so reverting it would mark it undone while its changes stay in the "
        "database. Write the statements that undo its upgrade() (e.g. op.drop_index for "
        "op.create_index); if it truly cannot be undone, say so with "
        '`raise NotImplementedError("why")` so that a downgrade fails loudly.'
    )


# -- up_down_consistency -----------------------------------------------------------------------


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


# -- models_match_migrations -------------------------------------------------------------------


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


def require_empty(url: str) -> None:
    """check migrates its scratch database outside any gate, lock, approval or audit: never
    one that holds anything."""
    from sqlalchemy import inspect

    from orchestrator.db.database import make_engine, safe_url

    engine = make_engine(url, "orchestrator check", writer=False)
    try:
        with engine.connect() as connection:
            tables = sorted(inspect(connection).get_table_names())
    except SQLAlchemyError as exc:
        raise MigrationFailed(
            f"check: cannot use the scratch database {safe_url(url)}: {describe_error(exc)}"
        ) from None
    finally:
        engine.dispose()
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise UsageError(
            f"--scratch-url {safe_url(url)} is not empty (tables: {shown}). check migrates its "
            "scratch database from nothing, with no gate, lock or audit trail: give it an empty "
            "database made for the purpose, never one that holds anything."
        )


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


# -- lint --------------------------------------------------------------------------------------


def strictest_env(app: App) -> EnvironmentConfig | None:
    rank = {"off": 0, "warn": 1, "error": 2}
    envs = [app.envs.by_name[name] for name in app.envs.order]
    if not envs:
        return None
    # the strictest lint mode; among equals, the last in promotion order (closest to prod)
    return max(reversed(envs), key=lambda e: rank[e.policy.lint])


def check_lint(app: App, head: str) -> list[Finding]:
    from orchestrator.core.lint_rules import DEFAULT_EXCLUDE
    from orchestrator.migrations.lint.findings import blocking
    from orchestrator.running.policies import lint_findings

    env = strictest_env(app)
    exclude = [*DEFAULT_EXCLUDE, *(env.policy.lint_exclude if env else [])]
    policy = f" (the lint policy of {env.name})" if env else ""
    revisions = app.graph.upgrade_path((), head)
    if not revisions:
        return []
    findings, problem = lint_findings(app, revisions, exclude)
    notes: list[Finding] = []
    if problem is not None:
        notes.append({"check": "lint", "message": f"the migrations were not linted: {problem}."})
    return notes + [
        {
            "check": "lint",
            "revision": f.revision,
            "rule": f.rule,
            "line": f.line,
            "message": (
                f"revision {f.revision} ({app.graph.get(f.revision).path.name}) breaks "
                f"{f.rule}{policy}: {f.message} {f.help} Fix the migration, or, if it is safe "
                f"here, waive the rule for this revision with a line "
                f"`# orchestrator: allow {f.rule}` in its file, saying why."
            ).replace("  ", " "),
        }
        for f in blocking(findings)
    ]
