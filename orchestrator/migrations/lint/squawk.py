"""Running squawk once over the revisions' PostgreSQL SQL, and reading its findings.

Everything else about lint is plain data in / plain data out; this runs the squawk
executable (https://squawkhq.com, ``pip install squawk-cli``) exactly once for all the
revisions :func:`lint_revisions` is given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.lint_rules import SQUAWK_RULES
from orchestrator.migrations.lint.findings import Finding, expand_aliases

_SUBPROCESS_TIMEOUT_S = 300


class LintError(Exception):
    """squawk itself failed (crash, bad arguments, unparsable output)."""


class SquawkMissing(LintError):
    def __init__(self) -> None:
        super().__init__(
            "squawk executable not found (neither next to the Python interpreter nor on PATH); "
            "install it with `pip install squawk-cli` (it is in the `dev` extra: "
            "`pip install -e '.[dev]'`)"
        )


def locate_squawk(*, interpreter_dir: str | None, path: str | None) -> str | None:
    """squawk in ``interpreter_dir`` first (the venv's bin/), then on ``path``."""
    if interpreter_dir:
        found = shutil.which("squawk", path=interpreter_dir)
        if found:
            return found
    if path:
        return shutil.which("squawk", path=path)
    return None


def find_squawk() -> str | None:
    # Not resolving symlinks: a venv's python is a symlink to the base interpreter, and the
    # squawk installed by pip sits next to the symlink, in the venv's bin/.
    return locate_squawk(
        interpreter_dir=os.path.dirname(sys.executable) or None,
        path=os.environ.get("PATH"),
    )


def ensure_squawk(executable: str | None) -> str:
    if not executable:
        raise SquawkMissing()
    return executable


# ----------------------------------------------------------------------------- linting

_BEGIN_RE = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION)(\s+(WORK|TRANSACTION))?\s*;\s*$", re.I)
_COMMIT_RE = re.compile(r"^\s*(COMMIT|END)(\s+(WORK|TRANSACTION))?\s*;\s*$", re.I)


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("--")


def _in_one_transaction(sql: str) -> str:
    """The revision's SQL wrapped in exactly one explicit transaction, line numbers unchanged.

    Why not ``--assume-in-transaction``: the orchestrator runs each revision in its own
    transaction, and squawk must know it (otherwise: prefer-robust-stmts "missing transaction"
    on every ALTER, require-concurrent-index-creation on a table created in the same revision).
    But with that flag squawk reports any explicit ``COMMIT;``/``BEGIN;`` as
    ``transaction-nesting``, and stripping them all would hide Alembic's ``autocommit_block()``
    (``COMMIT; CREATE INDEX CONCURRENTLY ...; BEGIN;``) and give a false
    ban-concurrent-index-creation-in-transaction. So: blank the revision's own outer
    ``BEGIN;``/``COMMIT;`` when present, then put ``BEGIN;`` before line 1 (same line) and
    ``COMMIT;`` after the end; the inner autocommit pairs stay, and squawk sees the real
    transaction structure without the flag.
    """
    lines = sql.split("\n")
    code = [i for i, line in enumerate(lines) if _is_code(line)]
    if code and _BEGIN_RE.match(lines[code[0]]):
        lines[code[0]] = ""
        code.pop(0)
    if code and _COMMIT_RE.match(lines[code[-1]]):
        lines[code[-1]] = ""
    lines[0] = "BEGIN; " + lines[0]
    return "\n".join(lines) + "\nCOMMIT;\n"


def _file_names(revisions: Sequence[str]) -> dict[str, str]:
    """Revision -> unique, filesystem-safe ``<revision>.sql`` name."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for revision in revisions:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", revision) or "revision"
        name, n = f"{base}.sql", 1
        while name.lower() in used:
            n += 1
            name = f"{base}_{n}.sql"
        used.add(name.lower())
        names[revision] = name
    return names


def _run_squawk(executable: str, files: Sequence[str], exclude: Sequence[str], cwd: str) -> Any:
    # No --assume-in-transaction: each file carries its transaction explicitly, see
    # _in_one_transaction; --no-assume-in-transaction overrides a .squawk.toml that sets it.
    args = [executable, "--reporter", "json", "--no-assume-in-transaction"]
    if exclude:
        args.append("--exclude=" + ",".join(exclude))
    args.extend(files)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LintError(f"squawk timed out after {_SUBPROCESS_TIMEOUT_S}s") from exc
    except OSError as exc:
        raise LintError(f"cannot run squawk ({executable}): {exc}") from exc
    # 0: clean, 1: violations found. Anything else (2 = bad arguments, e.g. unknown rule in
    # --exclude; crashes) is a failure of the tool, not of the migration.
    if proc.returncode not in (0, 1):
        raise LintError(
            f"squawk failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise LintError(
            f"squawk output is not JSON (exit code {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()[:500]}"
        ) from exc
    if not isinstance(data, list):
        raise LintError(f"unexpected squawk JSON output: {proc.stdout[:500]}")
    return data


def lint_revisions(
    sql_by_revision: Mapping[str, str],
    waivers_by_revision: Mapping[str, frozenset[str]],
    exclude: Sequence[str] = (),
) -> list[Finding]:
    """Lint each revision's SQL with one squawk run; findings ordered by revision, then line.

    ``exclude``: squawk rule names never reported (pass ``DEFAULT_EXCLUDE``, possibly extended).
    Raises :class:`SquawkMissing` if squawk is not installed, :class:`LintError` if it fails.
    """
    if not sql_by_revision:
        return []
    executable = ensure_squawk(find_squawk())
    excluded = expand_aliases(r.strip().lower() for r in exclude if r.strip())
    names = _file_names(list(sql_by_revision))
    revision_by_name = {name: rev for rev, name in names.items()}
    order = {rev: i for i, rev in enumerate(sql_by_revision)}

    with tempfile.TemporaryDirectory(prefix="orchestrator-lint-") as tmp:
        for revision, sql in sql_by_revision.items():
            Path(tmp, names[revision]).write_text(_in_one_transaction(sql), encoding="utf-8")
        raw = _run_squawk(
            executable,
            [names[rev] for rev in sql_by_revision],
            # only squawk's own names: `unlintable` is ours, an alias is expanded above
            sorted(r for r in excluded if r in SQUAWK_RULES),
            tmp,
        )

    findings: list[Finding] = []
    for item in raw:
        try:
            file_name = os.path.basename(str(item["file"]))
            rule = str(item["rule_name"])
        except (TypeError, KeyError) as exc:
            raise LintError(f"unexpected squawk JSON item: {item!r}") from exc
        owner = revision_by_name.get(file_name)
        if owner is None:
            raise LintError(f"squawk reported an unknown file {file_name!r}")
        if rule in excluded:
            continue
        line = item.get("line")
        findings.append(
            Finding(
                revision=owner,
                rule=rule,
                message=str(item.get("message") or ""),
                help=str(item.get("help") or ""),
                # squawk's JSON lines are 0-based
                line=line + 1 if isinstance(line, int) else None,
                waived=rule in waivers_by_revision.get(owner, frozenset()),
            )
        )
    findings.sort(key=lambda f: (order[f.revision], f.line if f.line is not None else -1))
    return findings
