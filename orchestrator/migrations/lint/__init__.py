"""Lint of PostgreSQL migration SQL with squawk: findings, waivers, the run, the messages.

One job a module: `findings` (a finding, waivers in revision files, what blocks), `squawk`
(running the executable once over the revisions' SQL), `messages` (what a refusal or a
warning says). The names below are re-exported for callers that import the package.
"""

from orchestrator.core.lint_rules import DEFAULT_EXCLUDE, UNLINTABLE
from orchestrator.migrations.lint.findings import (
    Finding,
    blocking,
    expand_aliases,
    parse_waivers,
    unlintable,
)
from orchestrator.migrations.lint.messages import (
    ahead_warning,
    refusal_message,
    rules_by_revision,
    waiver_advice,
)
from orchestrator.migrations.lint.squawk import (
    LintError,
    SquawkMissing,
    ensure_squawk,
    find_squawk,
    lint_revisions,
    locate_squawk,
)

__all__ = [
    "DEFAULT_EXCLUDE",
    "UNLINTABLE",
    "Finding",
    "LintError",
    "SquawkMissing",
    "blocking",
    "ensure_squawk",
    "expand_aliases",
    "find_squawk",
    "lint_revisions",
    "locate_squawk",
    "parse_waivers",
    "ahead_warning",
    "refusal_message",
    "rules_by_revision",
    "waiver_advice",
    "unlintable",
]
