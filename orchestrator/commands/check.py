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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.check_models import check_models
from orchestrator.commands.check_up_down import check_up_down
from orchestrator.core.config import given_url
from orchestrator.core.errors import MigrationFailed, UsageError
from orchestrator.db.database import describe_error
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
