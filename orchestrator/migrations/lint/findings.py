"""A lint finding, the waivers a revision's file declares, and which findings block a run.

Waivers live in the revision's Python source, one or more rules per line::

    # orchestrator: allow require-concurrent-index-creation
    # orchestrator: allow ban-drop-column, renaming-column  -- old columns, unused since v3

A waived finding is still reported (``waived=True``) but is not :func:`blocking`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.core.lint_rules import RULE_ALIASES, UNLINTABLE


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    message: str
    help: str
    line: int | None  # 1-based line in the SQL given for the revision
    waived: bool


_UNLINTABLE_HELP = (
    "A revision that reads the database, needs a live connection (batch mode on SQLite) or "
    "uses what is None offline cannot be linted: review its SQL by hand, or make it render "
    "offline (`if context.is_offline_mode(): ...` around its reads)."
)


_READS_ROWS_HELP = (
    "It reads rows from the database (a data migration): offline there is no database to "
    "read, so its SQL cannot be linted. Review what it does by hand; once reviewed, waive "
    "`unlintable` for it."
)


def _reads_rows(reason: str) -> bool:
    # offline, op.get_bind().execute(...) returns None: `.fetchall()` & co. then fail on it
    return (
        "'NoneType' object has no attribute" in reason
        and any(
            f"'{name}'" in reason
            for name in (
                "fetchall",
                "fetchone",
                "fetchmany",
                "scalar",
                "scalars",
                "first",
                "all",
                "one",
                "scalar_one",
                "mappings",
                "__iter__",
            )
        )
        or "'NoneType' object is not iterable" in reason
    )


def unlintable(revision: str, reason: str, waivers: frozenset[str]) -> Finding:
    """The finding for a revision whose SQL could not be rendered offline for linting."""
    reads = _reads_rows(reason)
    return Finding(
        revision=revision,
        rule=UNLINTABLE,
        message=("it reads rows from the database, so " if reads else "")
        + f"it cannot be rendered offline (alembic upgrade --sql) for linting: {reason}",
        help=_READS_ROWS_HELP if reads else _UNLINTABLE_HELP,
        line=None,
        waived=UNLINTABLE in waivers,
    )


_WAIVER_RE = re.compile(r"#\s*orchestrator\s*:\s*allow\b(?P<rest>[^\n]*)", re.IGNORECASE)
_RULE_TOKEN_RE = re.compile(r"[a-z][a-z0-9-]*")


def expand_aliases(rules: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for rule in (r.strip().lower() for r in rules):
        if not rule:
            continue
        out.add(rule)
        out.update(RULE_ALIASES.get(rule, ()))
    return out


def parse_waivers(source: str) -> frozenset[str]:
    """Rule names waived by ``# orchestrator: allow <rule>[, <rule> ...]`` lines.

    Rules are separated by commas and/or spaces; the list ends at the first token that is not
    a rule name (``-- reason``, ``(reason)``, another ``#`` ...). Known squawk aliases are
    expanded (``prefer-timestamptz`` also waives ``prefer-timestamp-tz``).
    """
    rules: list[str] = []
    for match in _WAIVER_RE.finditer(source):
        for token in re.split(r"[,\s]+", match.group("rest").strip()):
            if not token:
                continue
            token = token.lower()
            if not _RULE_TOKEN_RE.fullmatch(token):
                break
            rules.append(token)
    return frozenset(expand_aliases(rules))


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.waived]
