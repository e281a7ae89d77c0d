"""Checksums of a revision: its file's bytes and those of the project modules it imports."""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.migrations.project_modules import Import, ProjectModules, imports_of

if TYPE_CHECKING:  # pragma: no cover
    from orchestrator.migrations.revisions.static import RevisionFile


def checksum_bytes(data: bytes) -> str:
    """sha256 hex digest of ``data`` with CRLF normalised to LF."""
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


def checksum_file(path: Path) -> str:
    """sha256 hex digest of a file's bytes with CRLF normalised to LF."""
    return checksum_bytes(Path(path).read_bytes())


def combined_checksum(own: str, modules: Mapping[str, str]) -> str:
    """A revision's checksum: its file's and those of the project modules it imports.

    `own` is `checksum_bytes` of the revision file; `modules` maps each project module it
    imports, directly or through other project modules, to its `checksum_bytes`, keyed by its
    path relative to the project directory with `/` separators. Without such modules the
    checksum is the file's own digest, exactly as before modules were covered, so ledgers
    written then stay valid. Otherwise it is the sha256 hex digest of the UTF-8 JSON text
    `["<own>",[["<path>","<digest>"],...]]`: pairs sorted by path, no spaces, ASCII escapes
    (Python's `json.dumps(..., separators=(",", ":"))`).
    """
    if not modules:
        return own
    text = json.dumps([own, sorted(modules.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


_MODULE_IMPORTS: dict[str, tuple[Import, ...]] = {}  # a file's imports, by its digest


def project_imports(data: bytes, path: Path, modules: ProjectModules) -> tuple[Import, ...]:
    """A file's import statements, parsed only when its text may import a project module.
    Never read from the parse cache on disk: it lives in `__pycache__`, where anyone who can
    plant a file could plant an entry that hides an import."""
    if not modules.may_import(data):
        return ()
    digest = checksum_bytes(data)
    if digest not in _MODULE_IMPORTS:
        try:
            _MODULE_IMPORTS[digest] = imports_of(ast.parse(data, filename=str(path)))
        except (SyntaxError, ValueError):  # it fails when run; its bytes still count
            _MODULE_IMPORTS[digest] = ()
    return _MODULE_IMPORTS[digest]


def current_checksums(
    files: Sequence[RevisionFile], modules: ProjectModules | None = None
) -> dict[str, str]:
    """Checksums of these revisions as their files (and modules) are on disk now."""
    now: list[RevisionFile] = []
    for rf in files:
        data = rf.path.read_bytes()
        imports = project_imports(data, rf.path, modules) if modules is not None else ()
        now.append(replace(rf, checksum=checksum_bytes(data), imports=imports))
    if modules is not None:
        now = cover_modules(now, modules)
    return {rf.revision: rf.checksum for rf in now}


def cover_modules(files: Sequence[RevisionFile], modules: ProjectModules) -> list[RevisionFile]:
    """`files` with checksums that cover the project modules each one imports."""
    known: dict[Path, tuple[str, tuple[Path, ...]]] = {}

    def read(path: Path) -> tuple[str, tuple[Path, ...]]:
        if path not in known:
            data = path.read_bytes()
            digest = checksum_bytes(data)
            known[path] = (digest, ())  # an import cycle ends here
            known[path] = (digest, tuple(modules.files(path, project_imports(data, path, modules))))
        return known[path]

    out: list[RevisionFile] = []
    for rf in files:
        digests: dict[str, str] = {}
        todo = list(modules.files(rf.path, rf.imports))
        while todo:
            path = todo.pop()
            name = modules.relative(path)
            if name not in digests and path != rf.path:
                digests[name], imported = read(path)
                todo.extend(imported)
        out.append(replace(rf, checksum=combined_checksum(rf.checksum, digests)) if digests else rf)
    return out
