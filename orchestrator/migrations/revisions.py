"""Fast, non-executing reader of Alembic version directories, plus checksums.

The fast path parses every revision file with :mod:`ast` and reads the
module-level ``revision`` / ``down_revision`` / ``branch_labels`` /
``depends_on`` assignments without importing the file.  As soon as one file in
the directory set is not "plain" (a computed value, a name reference, a
conditional assignment, no ``revision`` at all, a syntax error...), the whole
set is loaded through Alembic's own :class:`~alembic.script.ScriptDirectory`
instead, so the result is always what Alembic itself would see.

File discovery and ordering mirror ``ScriptDirectory._load_revisions`` /
``Script._list_py_dir`` / ``Script._from_path`` (source files only, i.e.
``sourceless = false``): per version location, file names sorted, ``__init__*``
and ``.#*`` skipped, ``__pycache__`` skipped, sub-directories walked in sorted
order only when ``recursive`` is set, the same real file never loaded twice.
The load order matters: Alembic uses it to break ties when ordering upgrades.

:class:`RevisionGraph` answers graph questions.  Heads, bases, resolution and
ancestry are computed directly; upgrade/downgrade paths are delegated to a
lazily built :class:`alembic.script.revision.RevisionMap` so that the order is
exactly Alembic's.  Alembic is only imported on those code paths.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.migrations.project_modules import Import, ProjectModules, imports_of, source_only

if TYPE_CHECKING:  # pragma: no cover
    from alembic.script.revision import RevisionMap

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
    "combined_checksum",
    "current_checksums",
    "checksum_file",
    "does_nothing",
    "find_function",
    "list_revision_paths",
    "read_revision_file",
    "read_versions",
    "read_versions_with_alembic",
    "reverts_nothing",
]

# Same patterns as alembic.script.base / alembic.script.revision.
_ONLY_SOURCE_REV_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
_RELATIVE_DESTINATION = re.compile(r"(?:(.+?)@)?(\w+)?((?:\+|-)\d+)")
_ILLEGAL_REV_CHARS = frozenset("@-+:")

_FIELDS = ("revision", "down_revision", "branch_labels", "depends_on")
# Names whose use at module level makes static reading unreliable.
_DYNAMIC_NAMES = frozenset({"globals", "locals", "vars", "exec", "eval"})


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# static reading
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionFile:
    revision: str
    down_revisions: tuple[str, ...]
    branch_labels: tuple[str, ...]
    depends_on: tuple[str, ...]
    path: Path
    doc: str
    checksum: str
    # the file's import statements (project_modules.Import), for `combined_checksum`
    imports: tuple[Import, ...] = field(default=(), repr=False, compare=False)


def _first_line(doc: str | None) -> str:
    if not doc:
        return ""
    doc = doc.strip()
    return doc.splitlines()[0].strip() if doc else ""


def _literal(node: ast.expr, name: str, path: Path) -> tuple[str, ...] | None:
    """Value of a plain literal: str, None, or a tuple/list of str."""
    if isinstance(node, ast.Constant):
        if node.value is None:
            return None
        if isinstance(node.value, str) and node.value:
            return (node.value,)
    elif isinstance(node, (ast.Tuple, ast.List)):
        out: list[str] = []
        for elt in node.elts:
            if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str) and elt.value):
                raise NotPlain(path, f"{name} contains a non-literal element")
            out.append(elt.value)
        return tuple(out)
    raise NotPlain(path, f"{name} is not a plain literal")


def _check_no_dynamic_binding(tree: ast.Module, accepted: set[int], path: Path) -> None:
    """Raise NotPlain if a tracked name may be bound other than by ``accepted``."""
    tracked = set(_FIELDS)

    def visit(node: ast.AST, module_scope: bool) -> None:
        if isinstance(node, ast.Global) and tracked.intersection(node.names):
            raise NotPlain(path, "global declaration of a revision field")
        if isinstance(node, ast.Name) and node.id in _DYNAMIC_NAMES:
            raise NotPlain(path, f"uses {node.id}()")
        if module_scope:
            if id(node) in accepted:
                return
            if (
                isinstance(node, ast.Name)
                and isinstance(node.ctx, (ast.Store, ast.Del))
                and node.id in tracked
            ):
                raise NotPlain(path, f"{node.id} is bound dynamically")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    if alias.name == "*" or bound in tracked:
                        raise NotPlain(path, "revision field bound by an import")
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and node.name in tracked
            ):
                raise NotPlain(path, f"{node.name} bound by a definition")
            if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name in tracked:
                raise NotPlain(path, f"{node.name} bound by a match pattern")
            if isinstance(node, ast.MatchMapping) and node.rest in tracked:
                raise NotPlain(path, f"{node.rest} bound by a match pattern")
        inner = module_scope and not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
        )
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    for stmt in tree.body:
        visit(stmt, True)


def _parse_source(data: bytes, path: Path) -> RevisionFile | None:
    cached = _CACHE.get(checksum_bytes(data))
    if cached is not None:
        return RevisionFile(path=path, **cached)
    try:
        tree = ast.parse(data, filename=str(path))
    except (SyntaxError, ValueError) as exc:
        raise NotPlain(path, f"cannot parse: {exc}") from exc

    nodes: dict[str, ast.expr] = {}
    accepted: set[int] = set()
    for stmt in tree.body:
        targets: list[ast.expr]
        value: ast.expr | None
        if isinstance(stmt, ast.Assign):
            targets, value = list(stmt.targets), stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.simple:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name) and t.id in _FIELDS]
        if not names:
            continue
        if value is None:  # bare annotation ``revision: str`` binds nothing
            accepted.update(id(t) for t in targets)
            continue
        if len(names) != len(targets):
            # e.g. ``revision = x.attr = "abc"``: keep it simple, let Alembic decide
            raise NotPlain(path, "revision field in a mixed assignment")
        accepted.update(id(t) for t in targets)
        for name in names:
            nodes[name] = value  # later assignments win, like at runtime

    _check_no_dynamic_binding(tree, accepted, path)

    if "revision" not in nodes:
        return None
    rev_node = nodes["revision"]
    if not (isinstance(rev_node, ast.Constant) and isinstance(rev_node.value, str)):
        raise NotPlain(path, "revision is not a string literal")
    revision = rev_node.value
    if not revision or _ILLEGAL_REV_CHARS.intersection(revision):
        raise NotPlain(path, f"invalid revision id {revision!r}")
    if "down_revision" not in nodes:
        raise NotPlain(path, "no down_revision assignment")
    fields = {name: _literal(node, name, path) or () for name, node in nodes.items()}
    parsed = RevisionFile(
        revision=revision,
        down_revisions=fields["down_revision"],
        branch_labels=fields.get("branch_labels", ()),
        depends_on=fields.get("depends_on", ()),
        path=path,
        doc=_first_line(ast.get_docstring(tree, clean=True)),
        checksum=checksum_bytes(data),
    )
    _CACHE.remember(parsed)
    return parsed


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
_CACHE = _ParseCache()


def read_revision_file(path: Path) -> RevisionFile | None:
    """Statically read one revision file (never executes it).

    Returns ``None`` when the file has no ``revision`` assignment at all.
    Raises :class:`NotPlain` when a revision field is not a plain literal
    (str, None, tuple/list of str) or may be bound dynamically.
    """
    path = Path(path)
    return _parse_source(path.read_bytes(), path)


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
        _CACHE.load(cache_file)
    for path in list_revision_paths(dirs, recursive=recursive):
        data = path.read_bytes()
        try:
            rf = _parse_source(data, path)
        except NotPlain:
            return read_versions_with_alembic(dirs, recursive=recursive, modules=modules)
        if rf is None:
            return read_versions_with_alembic(dirs, recursive=recursive, modules=modules)
        imports = _imports(data, path, modules) if modules is not None else ()
        result.append(replace(rf, imports=imports) if imports else rf)
    if cache_file is not None:
        _CACHE.save(cache_file)
    return result if modules is None else _cover_modules(result, modules)


_MODULE_IMPORTS: dict[str, tuple[Import, ...]] = {}  # a file's imports, by its digest


def _imports(data: bytes, path: Path, modules: ProjectModules) -> tuple[Import, ...]:
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
        imports = _imports(data, rf.path, modules) if modules is not None else ()
        now.append(replace(rf, checksum=checksum_bytes(data), imports=imports))
    if modules is not None:
        now = _cover_modules(now, modules)
    return {rf.revision: rf.checksum for rf in now}


def _cover_modules(files: Sequence[RevisionFile], modules: ProjectModules) -> list[RevisionFile]:
    """`files` with checksums that cover the project modules each one imports."""
    known: dict[Path, tuple[str, tuple[Path, ...]]] = {}

    def read(path: Path) -> tuple[str, tuple[Path, ...]]:
        if path not in known:
            data = path.read_bytes()
            digest = checksum_bytes(data)
            known[path] = (digest, ())  # an import cycle ends here
            known[path] = (digest, tuple(modules.files(path, _imports(data, path, modules))))
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
                doc=_first_line(module.__doc__),
                checksum=checksum_bytes(data),
                imports=imports_of(ast.parse(data, filename=str(path))),
            )
        )
    return out if modules is None else _cover_modules(out, modules)


# --------------------------------------------------------------------------
# graph
# --------------------------------------------------------------------------


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
        if "@" in ref or _RELATIVE_DESTINATION.fullmatch(ref):
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
        if _RELATIVE_DESTINATION.fullmatch(ref):
            return self.resolve_relative((), ref)
        with self._translate_errors():
            rev = self._revision_map().get_revision(ref)
        return "base" if rev is None else rev.revision

    def resolve_relative(self, current_heads: Sequence[str], ref: str) -> str:
        """Resolve ``-N`` / ``+N`` / ``rev-N`` / ``label@-N`` style references.

        ``-N`` walks down N steps from the (first) current head, ``+N`` walks
        up from the single current head (or from base).  Walking one step
        below a base gives ``"base"``.  Non-relative refs go to :meth:`resolve`.
        """
        match = _RELATIVE_DESTINATION.fullmatch(ref)
        if not match:
            return self.resolve(ref)
        label, symbol, rel = match.groups()
        steps = int(rel)
        if steps == 0:
            raise RevisionPathError(f"relative revision {ref!r} moves nowhere")
        start: str
        if symbol is not None:
            start = self.resolve(symbol)
            if label is not None:
                self._check_lineage(start, label)
        else:
            heads = [self.resolve(h) for h in current_heads]
            heads = [h for h in heads if h != "base"]
            if label is not None:
                heads = [h for h in heads if self._in_lineage(h, label)]
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
        return self._walk(start, steps, label, ref)

    def _walk(self, start: str, steps: int, label: str | None, ref: str) -> str:
        node = start
        for _ in range(abs(steps)):
            nxt: Sequence[str]
            if steps > 0:
                nxt = self._bases if node == "base" else self._children[node]
                if label is not None:
                    nxt = [n for n in nxt if self._in_lineage(n, label)]
            elif node == "base":
                nxt = ()
            else:
                nxt = self._files[node].down_revisions or ("base",)
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

    def _lineage(self, rev: str) -> set[str]:
        """Ancestors and descendants along down_revision edges (no depends_on)."""
        out = {rev}
        todo = [rev]
        while todo:
            for down in self._files[todo.pop()].down_revisions:
                if down not in out:
                    out.add(down)
                    todo.append(down)
        todo = [rev]
        down_seen = {rev}
        while todo:
            for child in self._children[todo.pop()]:
                if child not in down_seen:
                    down_seen.add(child)
                    todo.append(child)
        return out | down_seen

    def _in_lineage(self, rev: str, label: str) -> bool:
        return rev in self._lineage(self.resolve(label))

    def _check_lineage(self, rev: str, label: str) -> None:
        if not self._in_lineage(rev, label):
            raise UnknownRevision(f"{label}@{rev}")

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

    # -- paths (delegated to Alembic for exact ordering) ----------------------

    def _revision_map(self) -> RevisionMap:
        if self._rmap is None:
            from alembic.script.revision import Revision, RevisionMap

            files = list(self._files.values())

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

            self._rmap = RevisionMap(generate)
        return self._rmap

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        from alembic.script import revision as alembic_revision

        try:
            yield
        except alembic_revision.MultipleHeads as exc:
            raise MultipleHeads(tuple(exc.heads), exc.argument or "head") from exc
        except alembic_revision.ResolutionError as exc:
            raise UnknownRevision(exc.argument) from exc
        except alembic_revision.RevisionError as exc:
            raise RevisionPathError(str(exc)) from exc

    def _current(self, current_heads: Sequence[str]) -> tuple[str, ...]:
        if isinstance(current_heads, str):
            current_heads = (current_heads,)
        out = [self.resolve(h) for h in current_heads]
        return tuple(dict.fromkeys(h for h in out if h != "base"))

    def _target(self, target: str) -> str:
        if target in ("head", "heads", "base") or "@" in target:
            return target
        if _RELATIVE_DESTINATION.fullmatch(target):
            return target
        return self.resolve(target)

    def upgrade_path(self, current_heads: Sequence[str], target: str) -> list[str]:
        """Revisions to apply, in Alembic's order, to upgrade to ``target``.

        Same computation as ``alembic upgrade <target>`` from a database at
        ``current_heads``; empty when ``target`` is already applied.
        """
        lower = self._current(current_heads)
        # Drop current heads that are ancestors of other current heads: the
        # applied set is the same, and Alembic rejects overlapping lower revs.
        covered = set().union(*(self.ancestors(h, include_self=False) for h in lower))
        lower = tuple(h for h in lower if h not in covered)
        upper = self._target(target)
        if upper == "base":
            return []
        linear = self._linear_path(lower, upper)
        if linear is not None:
            return linear
        with self._translate_errors():
            revs = list(self._revision_map().iterate_revisions(upper, lower, implicit_base=True))
        return [r.revision for r in reversed(revs)]

    def _linear_path(self, lower: tuple[str, ...], upper: str) -> list[str] | None:
        """The common case without Alembic: a straight line of single-parent revisions
        from `upper` down to the one current head (or to a base). None when the history
        there branches, merges or depends on another line: Alembic orders those."""
        if len(lower) > 1 or upper not in self._files:
            return None
        stop = lower[0] if lower else None
        path: list[str] = []
        rev: str | None = upper
        while rev is not None and rev != stop:
            node = self._files[rev]
            if len(node.down_revisions) > 1 or node.depends_on or node.branch_labels:
                return None
            path.append(rev)
            rev = node.down_revisions[0] if node.down_revisions else None
        if rev != stop:  # reached a base without meeting the current head
            return None
        return path[::-1]

    def downgrade_path(self, current_heads: Sequence[str], target: str) -> list[str]:
        """Revisions to revert, in order, to downgrade to ``target``.

        ``"base"`` reverts everything; relative targets such as ``-1`` are
        relative to ``current_heads`` (as ``alembic downgrade -1``).  Empty when
        ``target`` is applied and nothing above it is (where Alembic itself
        would complain "Nothing to drop"); :class:`RevisionPathError` when the
        target is not applied at all.
        """
        from alembic.script.revision import RangeNotAncestorError

        upper = self._current(current_heads)
        lower = self._target(target)
        with self._translate_errors():
            try:
                revs = list(
                    self._revision_map().iterate_revisions(upper, lower, select_for_downgrade=True)
                )
            except RangeNotAncestorError:
                # Alembic's "Nothing to drop": fine (empty path) when the target
                # is applied and nothing above it is; an error otherwise.
                if lower in self._files and any(lower in self.ancestors(h) for h in upper):
                    return []
                raise
        return [r.revision for r in revs]


# --------------------------------------------------------------------------
# what a revision's functions do (statically)
# --------------------------------------------------------------------------


def find_function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    found = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            found = node  # the last definition wins, as at import
    return found


def does_nothing(function: ast.FunctionDef | ast.AsyncFunctionDef | None) -> bool:
    """True for a missing function or one whose body is only pass, docstrings and `...`."""
    if function is None:
        return True
    return all(
        isinstance(stmt, ast.Pass)
        or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
        for stmt in function.body
    )


def reverts_nothing(path: Path) -> bool:
    """Whether the revision's downgrade() does nothing although its upgrade() does something:
    reverting it marks it undone while its changes stay in the database."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return False
    return does_nothing(find_function(tree, "downgrade")) and not does_nothing(
        find_function(tree, "upgrade")
    )
