"""The on-disk cache of what statically reading a revision file's exact bytes gave."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from orchestrator.migrations.revisions.static import RevisionFile


class _ParseCache:
    """What parsing a file's exact bytes gave, keyed by its checksum.

    Keyed by content, never by name or mtime, so an edited file is always parsed again:
    the gate's checksums stay computed from the bytes on disk. Stored beside the
    revisions in `__pycache__`, where Python keeps its own byte-code cache.
    """

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.used: set[str] = set()
        self.dirty = False

    def get(self, checksum: str) -> dict[str, Any] | None:
        entry = self.entries.get(checksum)
        if entry is not None:
            self.used.add(checksum)
            return {
                "revision": entry["revision"],
                "down_revisions": tuple(entry["down_revisions"]),
                "branch_labels": tuple(entry["branch_labels"]),
                "depends_on": tuple(entry["depends_on"]),
                "doc": entry["doc"],
                "checksum": checksum,
            }
        return None

    def remember(self, rf: RevisionFile) -> None:
        self.entries[rf.checksum] = {
            "revision": rf.revision,
            "down_revisions": list(rf.down_revisions),
            "branch_labels": list(rf.branch_labels),
            "depends_on": list(rf.depends_on),
            "doc": rf.doc,
        }
        self.used.add(rf.checksum)
        self.dirty = True

    def load(self, path: Path) -> None:
        self.entries, self.used, self.dirty = {}, set(), False
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == _CACHE_VERSION:
                self.entries = data["entries"]

    def save(self, path: Path) -> None:
        if not self.dirty and len(self.used) == len(self.entries):
            return
        keep = {k: v for k, v in self.entries.items() if k in self.used}
        with contextlib.suppress(OSError):
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": _CACHE_VERSION, "entries": keep}))
            os.replace(tmp, path)


_CACHE_VERSION = 2
CACHE = _ParseCache()
