"""Alembic's own RevisionMap over our revision files, built on demand, and its errors as ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from orchestrator.migrations.revisions.errors import (
    MultipleHeads,
    RevisionPathError,
    UnknownRevision,
)

if TYPE_CHECKING:  # pragma: no cover
    from alembic.script.revision import RevisionMap

    from orchestrator.migrations.revisions.static import RevisionFile


def revision_map(files: Iterable[RevisionFile]) -> RevisionMap:
    """The RevisionMap Alembic would build from these files (imports Alembic: only called
    where the order is Alembic's to decide)."""
    from alembic.script.revision import Revision, RevisionMap

    files = list(files)

    def generate() -> list[Revision]:
        return [
            Revision(
                rf.revision,
                rf.down_revisions or None,
                dependencies=rf.depends_on or None,
                branch_labels=rf.branch_labels or None,
            )
            for rf in files
        ]

    return RevisionMap(generate)


@contextlib.contextmanager
def alembic_errors() -> Iterator[None]:
    """Alembic's revision errors raised inside, as this package's."""
    from alembic.script import revision as alembic_revision

    try:
        yield
    except alembic_revision.MultipleHeads as exc:
        raise MultipleHeads(tuple(exc.heads), exc.argument or "head") from exc
    except alembic_revision.ResolutionError as exc:
        raise UnknownRevision(exc.argument) from exc
    except alembic_revision.RevisionError as exc:
        raise RevisionPathError(str(exc)) from exc
