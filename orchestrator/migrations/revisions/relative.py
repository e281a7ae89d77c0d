"""Relative revision references (``-N``, ``+N``, ``rev-N``, ``label@-N``) walked on a graph."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.migrations.revisions.errors import RevisionPathError, UnknownRevision

if TYPE_CHECKING:  # pragma: no cover
    from orchestrator.migrations.revisions.graph import RevisionGraph

# as alembic.script.revision
RELATIVE_DESTINATION = re.compile(r"(?:(.+?)@)?(\w+)?((?:\+|-)\d+)")


def resolve_relative(graph: RevisionGraph, current_heads: Sequence[str], ref: str) -> str:
    """`RevisionGraph.resolve_relative`: the revision ``ref`` walks to from ``current_heads``."""
    match = RELATIVE_DESTINATION.fullmatch(ref)
    if not match:
        return graph.resolve(ref)
    label, symbol, rel = match.groups()
    steps = int(rel)
    if steps == 0:
        raise RevisionPathError(f"relative revision {ref!r} moves nowhere")
    start: str
    if symbol is not None:
        start = graph.resolve(symbol)
        if label is not None:
            _check_lineage(graph, start, label)
    else:
        heads = [graph.resolve(h) for h in current_heads]
        heads = [h for h in heads if h != "base"]
        if label is not None:
            heads = [h for h in heads if _in_lineage(graph, h, label)]
        if steps < 0:
            if not heads:
                raise RevisionPathError(
                    f"relative revision {ref!r}: nothing applied to walk down from"
                )
            start = heads[0]
        else:
            if len(heads) > 1:
                raise RevisionPathError(
                    f"relative revision {ref!r}: ambiguous upgrade from "
                    f"multiple current revisions ({', '.join(heads)})"
                )
            start = heads[0] if heads else "base"
    return _walk(graph, start, steps, label, ref)


def _walk(graph: RevisionGraph, start: str, steps: int, label: str | None, ref: str) -> str:
    node = start
    for _ in range(abs(steps)):
        nxt: Sequence[str]
        if steps > 0:
            nxt = graph.bases() if node == "base" else graph.children(node)
            if label is not None:
                nxt = [n for n in nxt if _in_lineage(graph, n, label)]
        elif node == "base":
            nxt = ()
        else:
            nxt = graph.get(node).down_revisions or ("base",)
        if not nxt:
            raise RevisionPathError(
                f"relative revision {ref!r} didn't produce {abs(steps)} migrations"
            )
        if len(nxt) > 1:
            raise RevisionPathError(
                f"relative revision {ref!r}: ambiguous walk at {node} ({', '.join(nxt)})"
            )
        node = nxt[0]
    return node


def _lineage(graph: RevisionGraph, rev: str) -> set[str]:
    """Ancestors and descendants along down_revision edges (no depends_on)."""
    out = {rev}
    todo = [rev]
    while todo:
        for down in graph.get(todo.pop()).down_revisions:
            if down not in out:
                out.add(down)
                todo.append(down)
    todo = [rev]
    down_seen = {rev}
    while todo:
        for child in graph.children(todo.pop()):
            if child not in down_seen:
                down_seen.add(child)
                todo.append(child)
    return out | down_seen


def _in_lineage(graph: RevisionGraph, rev: str, label: str) -> bool:
    return rev in _lineage(graph, graph.resolve(label))


def _check_lineage(graph: RevisionGraph, rev: str, label: str) -> None:
    if not _in_lineage(graph, rev, label):
        raise UnknownRevision(f"{label}@{rev}")
