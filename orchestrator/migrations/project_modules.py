"""Which of the project's own modules a Python file runs when imported: found statically.

A revision's checksum covers these modules too (see `revisions.checksums.combined_checksum`),
so that changing a helper a revision imports is drift like editing the revision itself.

Nothing is imported or executed. Every `import` / `from ... import` statement of a file (at
any depth: inside functions too) is resolved the way Python's path finder would resolve it
against the project's import roots (the Alembic project's directory and its
`prepend_sys_path` entries): `import a.b.c` runs `a/__init__.py`, `a/b/__init__.py` and
`a/b/c.py`; `from a import x` also runs `a/x.py` when `x` is a submodule; relative imports
are resolved from the importing file's directory. Modules found elsewhere (the standard
library, site-packages) are not the project's and are left out, as are dynamic imports
(`importlib.import_module(name)`), which no static reading can follow.

`source_only()` makes what runs the source that was hashed: while it is active, Python reads
no byte-code cache, so a planted `__pycache__/*.pyc` (an unchecked-hash one is used whatever
the source says) never runs in place of a revision or of a module it imports.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import site
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader
from pathlib import Path
from types import CodeType, ModuleType

# (level, module, names): `from ..a import b, c` is (2, "a", ("b", "c")),
# `import a.b` is (0, "a.b", ())
Import = tuple[int, str, tuple[str, ...]]

__all__ = ["Import", "ProjectModules", "imports_of", "source_only"]

_RELATIVE_IMPORT = re.compile(rb"\bfrom\s*\.")


@contextmanager
def source_only() -> Iterator[None]:
    """Modules of the project imported meanwhile (revisions, env.py, what they import) are
    compiled from their source files, never read from a byte-code cache.

    Caches are looked up under a fresh, empty `sys.pycache_prefix`, so no `__pycache__`
    beside a file is consulted, and none is written. Installed packages and the standard
    library (which nothing hashes) keep their caches: compiling them would cost seconds.
    Modules imported before stay as they are: enter this before Alembic loads anything.
    """
    if any(isinstance(f, _InstalledKeepCaches) for f in sys.meta_path):
        yield  # already on
        return
    saved = sys.pycache_prefix, sys.dont_write_bytecode
    finder = _InstalledKeepCaches(saved)
    with tempfile.TemporaryDirectory(prefix="orchestrator-no-pycache-") as empty:
        sys.pycache_prefix, sys.dont_write_bytecode = empty, True
        sys.meta_path.insert(_path_finder_index(), finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            sys.pycache_prefix, sys.dont_write_bytecode = saved


def _path_finder_index() -> int:
    return next((i for i, f in enumerate(sys.meta_path) if f is PathFinder), len(sys.meta_path))


class _CachedLoader(SourceFileLoader):
    """The ordinary loader, with the byte-code cache settings of before `source_only`."""

    settings: tuple[str | None, bool] = (None, False)

    def get_code(self, fullname: str) -> CodeType | None:
        saved = sys.pycache_prefix, sys.dont_write_bytecode
        sys.pycache_prefix, sys.dont_write_bytecode = self.settings
        try:
            return super().get_code(fullname)
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = saved


class _InstalledKeepCaches(MetaPathFinder):
    """Finds modules as the path finder does; those installed outside the project (the
    standard library, site-packages) load with their byte-code caches."""

    def __init__(self, settings: tuple[str | None, bool]) -> None:
        self.settings = settings
        self.foreign = foreign_dirs()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        spec = PathFinder.find_spec(fullname, path, target)
        if (
            spec is not None
            and type(spec.loader) is SourceFileLoader
            and spec.origin is not None
            and os.path.realpath(spec.origin).startswith(self.foreign)
        ):
            loader = _CachedLoader(fullname, spec.origin)
            loader.settings = self.settings
            spec.loader = loader
        return spec


def imports_of(tree: ast.Module) -> tuple[Import, ...]:
    """Every import statement of a parsed file, in source order."""
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names if alias.name != "*")
            found.append((node.level, node.module or "", names))
    return tuple(found)


def foreign_dirs() -> tuple[str, ...]:
    """Where modules that are not the project's live: stdlib and installed packages."""
    paths = sysconfig.get_paths()
    dirs = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    dirs += [*site.getsitepackages(), site.getusersitepackages()]  # e.g. Debian's dist-packages
    # the orchestrator itself, wherever it is imported from (a checkout on PYTHONPATH): an
    # upgrade of the tool is no edit of the project's revisions
    dirs.append(str(Path(__file__).resolve().parent.parent))
    return tuple(sorted({os.path.realpath(d) + os.sep for d in dirs}))


class ProjectModules:
    """Resolves imports to project files, one file-system lookup per module name.

    `roots` are the directories a top-level name is looked up in, in order, as on `sys.path`;
    `project` is the directory that `relative` names files from.
    Create one per read of the revisions: the memos assume the files do not change meanwhile.
    """

    def __init__(self, project: Path, roots: Sequence[Path]) -> None:
        self.project = Path(os.path.realpath(project))
        foreign = foreign_dirs()
        self.roots = tuple(
            r
            for r in dict.fromkeys(Path(os.path.realpath(p)) for p in roots)
            if not (str(r) + os.sep).startswith(foreign)
        )
        self._foreign = foreign
        self._top: dict[str, Path | None] = {}
        self._absolute: dict[tuple[Import, ...], list[Path]] = {}

    def may_import(self, source: bytes) -> bool:
        """False only when `source` surely imports no project module: it has no relative
        import and none of the project's top-level module names anywhere in its text. A
        cheap test that spares parsing most revisions (`import sqlalchemy as sa` and
        `from alembic import op` only)."""
        if _RELATIVE_IMPORT.search(source):
            return True
        return self._names is not None and self._names.search(source) is not None

    @cached_property
    def _names(self) -> re.Pattern[bytes] | None:
        """Any top-level name that resolves to a project module, as a whole word."""
        names: set[str] = set()
        for root in self.roots:
            with contextlib.suppress(OSError), os.scandir(root) as entries:
                for entry in entries:
                    name = entry.name.removesuffix(".py") if entry.is_file() else entry.name
                    if (entry.is_dir() or entry.name.endswith(".py")) and name.isidentifier():
                        names.add(name)
        found = sorted(n for n in names if self._root_of(n) is not None)
        if not found:
            return None
        return re.compile(rb"\b(?:" + b"|".join(re.escape(n.encode()) for n in found) + rb")\b")

    def relative(self, path: Path) -> str:
        """`path` relative to the project directory, `/`-separated."""
        return Path(os.path.relpath(path, self.project)).as_posix()

    def files(self, importer: Path, imports: tuple[Import, ...]) -> list[Path]:
        """The project files that running `importer`'s import statements executes (directly)."""
        known = self._absolute.get(imports)
        if known is not None:  # revisions mostly share the very same absolute imports
            return known
        found = list(self._files(importer, imports))
        if not any(level for level, _, _ in imports):
            self._absolute[imports] = found
        return found

    def _files(self, importer: Path, imports: Sequence[Import]) -> Iterator[Path]:
        for level, module, names in imports:
            parts = module.split(".") if module else []
            if level:
                base: Path | None = (
                    importer.parents[level - 1] if level <= len(importer.parents) else None
                )
            else:
                base = self._root_of(parts[0])
            found = self._walk(base, parts) if base is not None else None
            if found is None:
                continue
            files, package = found
            if package is not None:  # `from package import name`: name may be a submodule
                for name in names:
                    sub = self._walk(package, [name])
                    files += sub[0][-1:] if sub else []
            yield from (f for f in files if not str(f).startswith(self._foreign))

    def _root_of(self, top: str) -> Path | None:
        """The root Python would find `top` in: the first with a module or regular package
        of that name; else the first with a directory of that name (a namespace package),
        unless an installed module or package of that name wins over it."""
        if top not in self._top:
            regular = (
                root
                for root in self.roots
                if (root / top / "__init__.py").is_file() or (root / f"{top}.py").is_file()
            )
            found = next(regular, None)
            if found is None:
                namespace = next((r for r in self.roots if (r / top).is_dir()), None)
                if namespace is not None and top.isidentifier():
                    spec = PathFinder.find_spec(top)  # top-level: finds, executes nothing
                    installed = spec is not None and spec.origin not in (None, "namespace")
                    found = None if installed else namespace
            self._top[top] = found
        return self._top[top]

    @staticmethod
    def _walk(base: Path, parts: Sequence[str]) -> tuple[list[Path], Path | None] | None:
        """Files executed importing dotted `parts` below `base`, and the directory of the
        package imported (None when it is a plain module); None when nothing is found."""
        out: list[Path] = []
        directory = base
        for i, part in enumerate(parts):
            package = directory / part
            if (package / "__init__.py").is_file():
                out.append(package / "__init__.py")
                directory = package
            elif (directory / f"{part}.py").is_file():
                out.append(directory / f"{part}.py")
                return (out, None) if i == len(parts) - 1 else None
            elif package.is_dir():  # a namespace package: nothing of its own runs
                directory = package
            else:
                return None
        return out, directory
