"""Upgrade and downgrade paths of a revision graph, in the order Alembic itself applies them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.migrations.revisions.alembic_map import alembic_errors
from orchestrator.migrations.revisions.relative import RELATIVE_DESTINATION

if TYPE_CHECKING:  # pragma: no cover
    from orchestrator.migrations.revisions.graph import RevisionGraph


def upgrade_path(graph: RevisionGraph, current_heads: Sequence[str], target: str) -> list[str]:
    """`RevisionGraph.upgrade_path`: what ``alembic upgrade <target>`` applies, in order."""
    lower = _current(graph, current_heads)
    # Drop current heads that are ancestors of other current heads: the
    # applied set is the same, and Alembic rejects overlapping lower revs.
    covered = set().union(*(graph.ancestors(h, include_self=False) for h in lower))
    lower = tuple(h for h in lower if h not in covered)
    upper = _target(graph, target)
    if upper == "base":
        return []
    linear = _linear_path(graph, lower, upper)
    if linear is not None:
        return linear
    with alembic_errors():
        revs = list(graph.alembic_map().iterate_revisions(upper, lower, implicit_base=True))
    return [r.revision for r in reversed(revs)]


def _linear_path(graph: RevisionGraph, lower: tuple[str, ...], upper: str) -> list[str] | None:
    """The common case without Alembic: a straight line of single-parent revisions
    from `upper` down to the one current head (or to a base). None when the history
    there branches, merges or depends on another line: Alembic orders those."""
    if len(lower) > 1 or upper not in graph:
        return None
    stop = lower[0] if lower else None
    path: list[str] = []
    rev: str | None = upper
    while rev is not None and rev != stop:
        node = graph.get(rev)
        if len(node.down_revisions) > 1 or node.depends_on or node.branch_labels:
            return None
        path.append(rev)
        rev = node.down_revisions[0] if node.down_revisions else None
    if rev != stop:  # reached a base without meeting the current head
        return None
    return path[::-1]


def downgrade_path(graph: RevisionGraph, current_heads: Sequence[str], target: str) -> list[str]:
    """`RevisionGraph.downgrade_path`: what ``alembic downgrade <target>`` reverts, in order."""
    from alembic.script.revision import RangeNotAncestorError

    upper = _current(graph, current_heads)
    lower = _target(graph, target)
    with alembic_errors():
        try:
            revs = list(
                graph.alembic_map().iterate_revisions(upper, lower, select_for_downgrade=True)
            )
        except RangeNotAncestorError:
            # Alembic's "Nothing to drop": fine (empty path) when the target
            # is applied and nothing above it is; an error otherwise.
            if lower in graph and any(lower in graph.ancestors(h) for h in upper):
                return []
            raise
    return [r.revision for r in revs]


def _current(graph: RevisionGraph, current_heads: Sequence[str]) -> tuple[str, ...]:
    if isinstance(current_heads, str):
        current_heads = (current_heads,)
    out = [graph.resolve(h) for h in current_heads]
    return tuple(dict.fromkeys(h for h in out if h != "base"))


def _target(graph: RevisionGraph, target: str) -> str:
    if target in ("head", "heads", "base") or "@" in target:
        return target
    if RELATIVE_DESTINATION.fullmatch(target):
        return target
    return graph.resolve(target)
