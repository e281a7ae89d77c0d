"""The names a lint policy may use: squawk's rules (2.70) and the orchestrator's own; and the
squawk rules never enforced (`DEFAULT_EXCLUDE`).

An environment file that excludes or waives a name outside this list is a configuration
error (a typo would silently enforce the rule, or make squawk refuse every run).
"""

from __future__ import annotations

from collections.abc import Iterable

UNLINTABLE = "unlintable"  # ours: the revision's SQL could not be rendered offline

# `squawk --exclude=NAME` accepts exactly these (checked against squawk 2.70's binary)
SQUAWK_RULES: frozenset[str] = frozenset(
    {
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "adding-not-nullable-field",
        "adding-required-field",
        "adding-serial-primary-key-field",
        "ban-add-column",
        "ban-add-composite-attribute",
        "ban-add-enum-value",
        "ban-alter-database-options",
        "ban-alter-domain-with-add-constraint",
        "ban-alter-function-options",
        "ban-alter-generated-expression",
        "ban-alter-identity",
        "ban-alter-policy-condition",
        "ban-alter-policy-roles",
        "ban-alter-role-options",
        "ban-alter-row-level-security",
        "ban-alter-sequence-values",
        "ban-alter-system-options",
        "ban-alter-view-options",
        "ban-char-field",
        "ban-concurrent-index-creation-in-transaction",
        "ban-create-domain-with-constraint",
        "ban-create-policy",
        "ban-detach-inheritance",
        "ban-disable-trigger",
        "ban-drop-column",
        "ban-drop-constraint",
        "ban-drop-database",
        "ban-drop-domain",
        "ban-drop-extension",
        "ban-drop-function",
        "ban-drop-generated-expression",
        "ban-drop-index",
        "ban-drop-not-null",
        "ban-drop-policy",
        "ban-drop-schema",
        "ban-drop-sequence",
        "ban-drop-table",
        "ban-drop-type",
        "ban-drop-view",
        "ban-new-write-restriction",
        "ban-replace-view-function",
        "ban-replica-identity",
        "ban-revoke",
        "ban-set-default",
        "ban-set-schema",
        "ban-truncate-cascade",
        "ban-uncommitted-transaction",
        "changing-column-type",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
        "identifier-too-long",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-repack",
        "prefer-robust-stmts",
        "prefer-text-field",
        "prefer-timestamp-tz",
        "renaming-column",
        "renaming-object",
        "renaming-table",
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "require-concurrent-partition-detach",
        "require-concurrent-reindex",
        "require-enum-value-ordering",
        "require-lock-timeout",
        "require-statement-timeout",
        "require-table-schema",
        "require-timeout-settings",
        "transaction-nesting",
    }
)

# Alternative spellings (squawk aliases, older rule names) mapped to the names squawk reports
RULE_ALIASES: dict[str, tuple[str, ...]] = {
    "prefer-timestamptz": ("prefer-timestamp-tz",),
    "prefer-big-int": ("prefer-bigint-over-int",),
    "require-timeout-settings": ("require-lock-timeout", "require-statement-timeout"),
}

KNOWN_RULES: frozenset[str] = SQUAWK_RULES | {UNLINTABLE} | set(RULE_ALIASES)


def unknown_rules(rules: Iterable[str]) -> list[str]:
    """The names in `rules` that are neither squawk's nor ours, in their order."""
    return [r for r in rules if r.strip().lower() not in KNOWN_RULES]


# Rules of squawk 2.70 that are NOT enforced by default. Everything else stays enforced: the
# rules about locks and table rewrites that hurt a live database (require-concurrent-index-
# creation/-deletion, constraint-missing-not-valid, adding-foreign-key-constraint,
# changing-column-type, adding-field-with-default, adding-not-nullable-field,
# adding-required-field, disallowed-unique-constraint, adding-serial-primary-key-field, ...)
# and the ones about changes that break the running application or lose data (ban-drop-*,
# renaming-*): those are never style, and a deliberate one is acknowledged with a waiver.
# Names are the ones squawk reports in its JSON output (``--exclude`` rejects unknown names).
DEFAULT_EXCLUDE: tuple[str, ...] = (
    # Column-type taste / capacity planning, no lock or rewrite involved:
    "prefer-bigint-over-int",  # int vs bigint is a capacity choice for the team, not a lock
    "prefer-bigint-over-smallint",  # same for smallint
    "prefer-identity",  # serial vs identity is schema style; both are safe to create
    "prefer-text-field",  # varchar(n) is fine; widening it later no longer rewrites the table
    "prefer-timestamp-tz",  # timestamp vs timestamptz is a data-modelling choice, not locking
    "ban-char-field",  # char(n) is a (bad) style choice, not a locking hazard
    # Re-runnability: each revision runs in its own transaction, a failure rolls it back whole,
    # so IF [NOT] EXISTS guards are noise (squawk still asks for them in autocommit blocks):
    "prefer-robust-stmts",
    # The orchestrator sets lock_timeout / statement_timeout on the migration session itself,
    # so revisions must not repeat SET statements (these two replace require-timeout-settings):
    "require-lock-timeout",
    "require-statement-timeout",
)
