"""Alembic revision files read without running them, their checksums, and their graph.

One job a module: `static` reads one file, `parse_cache` remembers what that gave,
`script_dirs` reads the version directories in Alembic's load order (falling back to
Alembic when a file is not plain), `checksums` hashes a revision and what it imports,
`graph` answers history questions (`relative` and `paths` walk it, `alembic_map` lends
Alembic's order), `functions` tells what a revision's upgrade/downgrade do, `errors` holds
what they raise. The names below are re-exported for callers that import the package.
"""

from orchestrator.migrations.revisions.checksums import (
    checksum_bytes,
    checksum_file,
    combined_checksum,
    current_checksums,
)
from orchestrator.migrations.revisions.errors import (
    AmbiguousRevision,
    DuplicateRevision,
    MultipleHeads,
    NotPlain,
    RevisionGraphError,
    RevisionPathError,
    RevisionsError,
    UnknownRevision,
)
from orchestrator.migrations.revisions.functions import does_nothing, find_function, reverts_nothing
from orchestrator.migrations.revisions.graph import RevisionGraph
from orchestrator.migrations.revisions.script_dirs import (
    list_revision_paths,
    read_versions,
    read_versions_with_alembic,
)
from orchestrator.migrations.revisions.static import RevisionFile, read_revision_file

__all__ = [
    "AmbiguousRevision",
    "DuplicateRevision",
    "MultipleHeads",
    "NotPlain",
    "RevisionFile",
    "RevisionGraph",
    "RevisionGraphError",
    "RevisionPathError",
    "RevisionsError",
    "UnknownRevision",
    "checksum_bytes",
    "checksum_file",
    "combined_checksum",
    "current_checksums",
    "does_nothing",
    "find_function",
    "list_revision_paths",
    "read_revision_file",
    "read_versions",
    "read_versions_with_alembic",
    "reverts_nothing",
]
