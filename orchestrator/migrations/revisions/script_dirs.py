"""Reading every revision of Alembic's version directories, in Alembic's load order.

Each file is read statically (`static`); as soon as one file of the set is not plain, the
whole set is loaded through Alembic's own :class:`~alembic.script.ScriptDirectory` instead.

File discovery and ordering mirror ``ScriptDirectory._load_revisions`` /
``Script._list_py_dir`` / ``Script._from_path`` (source files only, i.e.
``sourceless = false``): per version location, file names sorted, ``__init__*``
and ``.#*`` skipped, ``__pycache__`` skipped, sub-directories walked in sorted
order only when ``recursive`` is set, the same real file never loaded twice.
The load order matters: Alembic uses it to break ties when ordering upgrades.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.migrations.project_modules import ProjectModules, imports_of, source_only
from orchestrator.migrations.revisions.checksums import (
    checksum_bytes,
    cover_modules,
    project_imports,
)
from orchestrator.migrations.revisions.errors import NotPlain, RevisionGraphError
from orchestrator.migrations.revisions.parse_cache import CACHE
from orchestrator.migrations.revisions.static import RevisionFile, first_line, parse_source

# as alembic.script.base
_ONLY_SOURCE_REV_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")


def list_revision_paths(dirs: Sequence[Path], recursive: bool = False) -> list[Path]:
    """Resolved paths of the files Alembic would load, in Alembic's load order."""
    out: list[Path] = []
    seen: set[Path] = set()

    def walk(directory: Path) -> None:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir():
                continue
            # resolving every file costs a syscall per path component: only links need it
            real = Path(entry.path).resolve() if entry.is_symlink() else directory / entry.name
            if real in seen:
                continue
            seen.add(real)
            if _ONLY_SOURCE_REV_FILE.match(real.name):
                out.append(real)
        if recursive:
            for entry in entries:
                if entry.is_dir() and not entry.name.endswith("__pycache__"):
                    walk(directory / entry.name)

    for location in dirs:
        location = Path(location).absolute()
        if location.exists():
            walk(location.resolve())
    return out


def read_versions(
    dirs: Sequence[Path], recursive: bool = False, modules: ProjectModules | None = None
) -> list[RevisionFile]:
    """Read every revision in ``dirs`` (Alembic version locations), in load order.

    Uses the static reader; if any file is not plain (or has no ``revision``,
    which Alembic would reject or handle via its legacy file-name rule), the
    whole set is loaded by Alembic instead (:func:`read_versions_with_alembic`).
    With ``modules``, checksums cover the project modules each revision imports
    (:func:`combined_checksum`); without, each is its file's own digest.
    """
    result: list[RevisionFile] = []
    cache_file = (
        Path(dirs[0]).absolute() / "__pycache__" / "orchestrator-revisions.json" if dirs else None
    )
    if cache_file is not None:
        CACHE.load(cache_file)
    for path in list_revision_paths(dirs, recursive=recursive):
        data = path.read_bytes()
        try:
            rf = parse_source(data, path)
        except NotPlain:
            return read_versions_with_alembic(dirs, recursive=recursive, modules=modules)
        if rf is None:
            return read_versions_with_alembic(dirs, recursive=recursive, modules=modules)
        imports = project_imports(data, path, modules) if modules is not None else ()
        result.append(replace(rf, imports=imports) if imports else rf)
    if cache_file is not None:
        CACHE.save(cache_file)
    return result if modules is None else cover_modules(result, modules)


def _as_str_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        return (value,)


def read_versions_with_alembic(
    dirs: Sequence[Path], recursive: bool = False, modules: ProjectModules | None = None
) -> list[RevisionFile]:
    """Load ``dirs`` through Alembic's ScriptDirectory (executes the files)."""
    from alembic.script import ScriptDirectory

    existing = [Path(d).absolute() for d in dirs if Path(d).exists()]
    if not existing:
        return []
    script_dir = ScriptDirectory(
        str(existing[0]),
        version_locations=[str(d) for d in existing],
        recursive_version_locations=recursive,
    )
    try:
        with source_only():
            scripts = list(script_dir.walk_revisions("base", "heads"))
    except SyntaxError as exc:  # a broken revision file: the user's to fix, not a crash
        raise RevisionGraphError(f"{exc.filename}, line {exc.lineno}: {exc.msg}") from exc
    except ImportError as exc:
        raise RevisionGraphError(f"a revision file cannot be imported: {exc}") from exc
    order = {p: i for i, p in enumerate(list_revision_paths(existing, recursive=recursive))}
    scripts.sort(key=lambda s: order.get(Path(s.path).resolve(), len(order)))
    out: list[RevisionFile] = []
    for script in scripts:
        module = script.module
        path = Path(script.path)
        data = path.read_bytes()
        out.append(
            RevisionFile(
                revision=script.revision,
                down_revisions=_as_str_tuple(getattr(module, "down_revision", None)),
                branch_labels=_as_str_tuple(getattr(module, "branch_labels", None)),
                depends_on=_as_str_tuple(getattr(module, "depends_on", None)),
                path=path,
                doc=first_line(module.__doc__),
                checksum=checksum_bytes(data),
                imports=imports_of(ast.parse(data, filename=str(path))),
            )
        )
    return out if modules is None else cover_modules(out, modules)
