"""The revision history as a graph: heads, bases, resolving references, ancestry.

Heads, bases, resolution and ancestry are computed directly; upgrade/downgrade paths
(`paths`) and Alembic's ``label@rev`` forms go through Alembic's own RevisionMap
(`alembic_map`), built on first use, so that the order is exactly Alembic's. Alembic is
only imported on those code paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from orchestrator.migrations.revisions import paths, relative
from orchestrator.migrations.revisions.alembic_map import alembic_errors, revision_map
from orchestrator.migrations.revisions.errors import (
    AmbiguousRevision,
    DuplicateRevision,
    MultipleHeads,
    RevisionGraphError,
    UnknownRevision,
)
from orchestrator.migrations.revisions.relative import RELATIVE_DESTINATION

if TYPE_CHECKING:  # pragma: no cover
    from alembic.script.revision import RevisionMap

    from orchestrator.migrations.revisions.static import RevisionFile


class RevisionGraph:
    """Revision history built from :class:`RevisionFile` objects.

    ``files`` should be in load order (as returned by :func:`read_versions`);
    Alembic uses that order to break ties between independent branches.
    """

    def __init__(self, files: Sequence[RevisionFile]) -> None:
        self._files: dict[str, RevisionFile] = {}
        self._labels: dict[str, str] = {}
        for rf in files:
            if rf.revision in self._files:
                raise DuplicateRevision(
                    f"revision {rf.revision!r} declared by both "
                    f"{self._files[rf.revision].path} and {rf.path}"
                )
            self._files[rf.revision] = rf
        for rf in self._files.values():
            for label in rf.branch_labels:
                owner = self._labels.get(label) or (label if label in self._files else None)
                if owner is not None:
                    raise DuplicateRevision(
                        f"branch label {label!r} of {rf.revision} already used by {owner}"
                    )
                self._labels[label] = rf.revision
        # resolved edges (depends_on may name a branch label)
        self._deps: dict[str, tuple[str, ...]] = {}
        children: dict[str, list[str]] = {r: [] for r in self._files}
        for rf in self._files.values():
            for down in rf.down_revisions:
                if down not in self._files:
                    raise UnknownRevision(down)
                children[down].append(rf.revision)
            deps: list[str] = []
            for dep in rf.depends_on:
                target = dep if dep in self._files else self._labels.get(dep)
                if target is None:
                    raise UnknownRevision(dep)
                deps.append(target)
            self._deps[rf.revision] = tuple(deps)
        self._children = {r: tuple(c) for r, c in children.items()}
        self._heads = tuple(r for r in self._files if not self._children[r])
        self._bases = tuple(r for r, rf in self._files.items() if not rf.down_revisions)
        required = {
            p for r, rf in self._files.items() for p in (*rf.down_revisions, *self._deps[r])
        }
        self._real_heads = tuple(r for r in self._files if r not in required)
        self._check_acyclic()
        self._rmap: RevisionMap | None = None

    # -- basic accessors ---------------------------------------------------

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[RevisionFile]:
        return iter(self._files.values())

    def __contains__(self, rev: object) -> bool:
        return rev in self._files

    def get(self, rev: str) -> RevisionFile:
        """The revision with exactly this id."""
        try:
            return self._files[rev]
        except KeyError:
            raise UnknownRevision(rev) from None

    def heads(self) -> tuple[str, ...]:
        """Head revisions (nothing has them as down_revision), in load order."""
        return self._heads

    def real_heads(self) -> tuple[str, ...]:
        """Heads that nothing depends on either (no down_revision nor depends_on
        points at them), in load order: what Alembic means by ``heads`` as an
        upgrade target."""
        return self._real_heads

    def bases(self) -> tuple[str, ...]:
        """Base revisions (no down_revision), in load order."""
        return self._bases

    def children(self, rev: str) -> tuple[str, ...]:
        """Revisions whose down_revisions include ``rev``."""
        self.get(rev)
        return self._children[rev]

    # -- resolution ---------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """Resolve a reference to a full revision id (or ``"base"``).

        Accepts a full id, a unique prefix (Alembic rules: only ids/labels
        longer than 3 characters are prefix-matched), ``head``/``heads`` when
        there is exactly one head, a branch label, ``base``, Alembic's
        ``label@rev`` / ``label@head`` forms and ``rev+N`` / ``rev-N``.
        """
        if not ref:
            raise UnknownRevision(ref)
        if ref == "base":
            return "base"
        if ref in ("head", "heads"):
            heads = self._heads if ref == "head" else self._real_heads
            if len(heads) > 1:
                raise MultipleHeads(heads, ref)
            if not heads:
                raise UnknownRevision(ref)
            return heads[0]
        if ref in self._files:
            return ref
        if ref in self._labels:
            return self._labels[ref]
        if "@" in ref or RELATIVE_DESTINATION.fullmatch(ref):
            return self._resolve_with_alembic(ref)
        candidates = [
            key for key in (*self._files, *self._labels) if len(key) > 3 and key.startswith(ref)
        ]
        if len(candidates) > 1:
            raise AmbiguousRevision(ref, candidates)
        if not candidates:
            raise UnknownRevision(ref)
        key = candidates[0]
        return key if key in self._files else self._labels[key]

    def _resolve_with_alembic(self, ref: str) -> str:
        if RELATIVE_DESTINATION.fullmatch(ref):
            return self.resolve_relative((), ref)
        with alembic_errors():
            rev = self.alembic_map().get_revision(ref)
        return "base" if rev is None else rev.revision

    def resolve_relative(self, current_heads: Sequence[str], ref: str) -> str:
        """Resolve ``-N`` / ``+N`` / ``rev-N`` / ``label@-N`` style references.

        ``-N`` walks down N steps from the (first) current head, ``+N`` walks
        up from the single current head (or from base).  Walking one step
        below a base gives ``"base"``.  Non-relative refs go to :meth:`resolve`.
        """
        return relative.resolve_relative(self, current_heads, ref)

    # -- ancestry -----------------------------------------------------------

    def ancestors(self, rev: str, include_self: bool = True) -> set[str]:
        """All revisions ``rev`` requires (down_revisions and depends_on)."""
        start = self.resolve(rev)
        if start == "base":
            return set()
        seen = {start}
        todo = [start]
        while todo:
            cur = todo.pop()
            for parent in (*self._files[cur].down_revisions, *self._deps[cur]):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        if not include_self:
            seen.discard(start)
        return seen

    def _check_acyclic(self) -> None:
        pending = {r: len(rf.down_revisions) + len(self._deps[r]) for r, rf in self._files.items()}
        dependents: dict[str, list[str]] = {r: [] for r in self._files}
        for r, rf in self._files.items():
            for parent in (*rf.down_revisions, *self._deps[r]):
                dependents[parent].append(r)
        ready = [r for r, n in pending.items() if n == 0]
        done = 0
        while ready:
            cur = ready.pop()
            done += 1
            for dep in dependents[cur]:
                pending[dep] -= 1
                if pending[dep] == 0:
                    ready.append(dep)
        if done != len(self._files):
            stuck = sorted(r for r, n in pending.items() if n > 0)
            raise RevisionGraphError(f"cycle detected among revisions: {', '.join(stuck)}")

    # -- paths (in Alembic's order) -----------------------------------------------

    def alembic_map(self) -> RevisionMap:
        """Alembic's RevisionMap of these files, built once, on first use."""
        if self._rmap is None:
            self._rmap = revision_map(self._files.values())
        return self._rmap

    def upgrade_path(self, current_heads: Sequence[str], target: str) -> list[str]:
        """Revisions to apply, in Alembic's order, to upgrade to ``target``.

        Same computation as ``alembic upgrade <target>`` from a database at
        ``current_heads``; empty when ``target`` is already applied.
        """
        return paths.upgrade_path(self, current_heads, target)

    def downgrade_path(self, current_heads: Sequence[str], target: str) -> list[str]:
        """Revisions to revert, in order, to downgrade to ``target``.

        ``"base"`` reverts everything; relative targets such as ``-1`` are
        relative to ``current_heads`` (as ``alembic downgrade -1``).  Empty when
        ``target`` is applied and nothing above it is (where Alembic itself
        would complain "Nothing to drop"); :class:`RevisionPathError` when the
        target is not applied at all.
        """
        return paths.downgrade_path(self, current_heads, target)
