"""The errors a revision history raises: unreadable files, unknown refs, broken graphs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class RevisionsError(Exception):
    """Base class of every error raised by this module."""


class NotPlain(RevisionsError):
    """A revision file cannot be read statically; load it with Alembic."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: not a plain revision file ({reason})")


class UnknownRevision(RevisionsError):
    """A revision reference does not resolve to exactly one revision."""

    def __init__(self, ref: str, candidates: Sequence[str] = ()) -> None:
        self.ref = ref
        self.candidates: tuple[str, ...] = tuple(candidates)
        if self.candidates:
            msg = f"revision {ref!r} is ambiguous; candidates: {', '.join(self.candidates)}"
        else:
            msg = f"unknown revision {ref!r}"
        super().__init__(msg)


class AmbiguousRevision(UnknownRevision):
    """A revision prefix matches more than one revision (``candidates``)."""


class MultipleHeads(RevisionsError):
    """``head`` was requested but the history has several heads."""

    def __init__(self, heads: Sequence[str], ref: str = "head") -> None:
        self.heads: tuple[str, ...] = tuple(heads)
        self.ref = ref
        super().__init__(f"{ref!r} is ambiguous: multiple heads present ({', '.join(self.heads)})")


class RevisionGraphError(RevisionsError):
    """The revision history itself is broken (duplicates, cycles...)."""


class DuplicateRevision(RevisionGraphError):
    """The same revision id (or branch label) is declared more than once."""


class RevisionPathError(RevisionsError):
    """No valid upgrade/downgrade path (not an ancestor, bad relative walk...)."""
