"""Reading one revision file's identity and links statically, without importing it.

The file is parsed with :mod:`ast` and its module-level ``revision`` / ``down_revision`` /
``branch_labels`` / ``depends_on`` assignments are read without running it. A file that is
not "plain" (a computed value, a name reference, a conditional assignment, a syntax
error...) raises :class:`NotPlain`: the reader of the whole set then asks Alembic instead
(`script_dirs.read_versions`), so the result is always what Alembic itself would see.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.migrations.project_modules import Import
from orchestrator.migrations.revisions.checksums import checksum_bytes
from orchestrator.migrations.revisions.errors import NotPlain
from orchestrator.migrations.revisions.parse_cache import CACHE

# as alembic.script.revision
_ILLEGAL_REV_CHARS = frozenset("@-+:")

_FIELDS = ("revision", "down_revision", "branch_labels", "depends_on")
# Names whose use at module level makes static reading unreliable.
_DYNAMIC_NAMES = frozenset({"globals", "locals", "vars", "exec", "eval"})


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


def first_line(doc: str | None) -> str:
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


def parse_source(data: bytes, path: Path) -> RevisionFile | None:
    """`read_revision_file` of these bytes, remembered in the parse cache by their digest."""
    cached = CACHE.get(checksum_bytes(data))
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
        doc=first_line(ast.get_docstring(tree, clean=True)),
        checksum=checksum_bytes(data),
    )
    CACHE.remember(parsed)
    return parsed


def read_revision_file(path: Path) -> RevisionFile | None:
    """Statically read one revision file (never executes it).

    Returns ``None`` when the file has no ``revision`` assignment at all.
    Raises :class:`NotPlain` when a revision field is not a plain literal
    (str, None, tuple/list of str) or may be bound dynamically.
    """
    path = Path(path)
    return parse_source(path.read_bytes(), path)
