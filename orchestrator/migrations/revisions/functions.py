"""What a revision's upgrade() and downgrade() do, read statically (never run)."""

from __future__ import annotations

import ast
from pathlib import Path


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
