"""What a project's `alembic/env.py` calls: one entry point for three callers.

- the orchestrator, which hands over its own connection in `config.attributes`;
- offline mode (`--sql`, linting), which needs only a dialect;
- plain `alembic upgrade/downgrade/...`, which gets the same lock, ledger and audit trail
  as an orchestrator run (see `plain_alembic.py`).
"""

from __future__ import annotations

from typing import Any

from orchestrator.evidence.ledger import OWN_TABLES
from orchestrator.migrations.runner import HANDED_OVER


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Keep the orchestrator's own tables out of autogenerate."""
    return not (type_ == "table" and name in OWN_TABLES)


def configure_options(target_metadata: Any) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "include_name": include_name,
        "render_as_batch": True,  # SQLite needs batch mode for ALTER; PostgreSQL ignores it
        "transaction_per_migration": True,
        "transactional_ddl": True,  # also on SQLite: our engine makes its DDL transactional
        "compare_type": True,
    }


def run_migrations(target_metadata: Any) -> None:
    from alembic import context
    from orchestrator.core.logging import reassert_logging

    reassert_logging()  # env.py may have run fileConfig just now: stderr stays JSON lines
    config = context.config
    options = configure_options(target_metadata)
    if context.is_offline_mode():
        dialect = config.attributes.get("dialect_name")
        if dialect is None:
            from orchestrator.running.plain_alembic import plain_alembic_dialect

            dialect = plain_alembic_dialect(context)
        context.configure(dialect_name=dialect, literal_binds=True, **options)
        config.attributes[HANDED_OVER] = True
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is None:
        from orchestrator.running.plain_alembic import plain_alembic

        plain_alembic(context, options)
        return
    # `transaction: per-run`: the runner holds one transaction around all the revisions
    options["transaction_per_migration"] = config.attributes.get("transaction_per_migration", True)
    context.configure(
        connection=connection,
        on_version_apply=config.attributes.get("on_version_apply"),
        **options,
    )
    config.attributes[HANDED_OVER] = True
    with context.begin_transaction():
        context.run_migrations()
