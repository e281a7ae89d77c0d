"""Lint PostgreSQL migration SQL with squawk (https://squawkhq.com, ``pip install squawk-cli``).

Everything here is plain data in / plain data out, except :func:`lint_revisions`, which runs
the squawk executable exactly once for all the revisions it is given.

Waivers live in the revision's Python source, one or more rules per line::

    # orchestrator: allow require-concurrent-index-creation
    # orchestrator: allow ban-drop-column, renaming-column  -- old columns, unused since v3

A waived finding is still reported (``waived=True``) but is not :func:`blocking`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.lint_rules import RULE_ALIASES, SQUAWK_RULES, UNLINTABLE

__all__ = [
    "DEFAULT_EXCLUDE",
    "UNLINTABLE",
    "Finding",
    "LintError",
    "SquawkMissing",
    "blocking",
    "ensure_squawk",
    "expand_aliases",
    "find_squawk",
    "lint_revisions",
    "locate_squawk",
    "parse_waivers",
    "ahead_warning",
    "refusal_message",
    "rules_by_revision",
    "waiver_advice",
    "unlintable",
]

# Rules of squawk 2.70 that are NOT enforced by default. Everything else stays enforced: the
# rules about locks and table rewrites that hurt a live database (require-concurrent-index-
# creation/-deletion, constraint-missing-not-valid, adding-foreign-key-constraint,
# changing-column-type, adding-field-with-default, adding-not-nullable-field,
# adding-required-field, disallowed-unique-constraint, adding-serial-primary-key-field, ...)
# and the ones about changes that break the running application or lose data (ban-drop-*,
# renaming-*): those are never style, and a deliberate one is acknowledged with a waiver.
# Names are the ones squawk reports in its JSON output (``--exclude`` rejects unknown names).
DEFAULT_EXCLUDE: tuple[str, ...] = (
    # Column-type taste / capacity planning, no lock or rewrite involved:
    "prefer-bigint-over-int",  # int vs bigint is a capacity choice for the team, not a lock
    "prefer-bigint-over-smallint",  # same for smallint
    "prefer-identity",  # serial vs identity is schema style; both are safe to create
    "prefer-text-field",  # varchar(n) is fine; widening it later no longer rewrites the table
    "prefer-timestamp-tz",  # timestamp vs timestamptz is a data-modelling choice, not locking
    "ban-char-field",  # char(n) is a (bad) style choice, not a locking hazard
    # Re-runnability: each revision runs in its own transaction, a failure rolls it back whole,
    # so IF [NOT] EXISTS guards are noise (squawk still asks for them in autocommit blocks):
    "prefer-robust-stmts",
    # The orchestrator sets lock_timeout / statement_timeout on the migration session itself,
    # so revisions must not repeat SET statements (these two replace require-timeout-settings):
    "require-lock-timeout",
    "require-statement-timeout",
)

_RULE_ALIASES = RULE_ALIASES

_SUBPROCESS_TIMEOUT_S = 300


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    message: str
    help: str
    line: int | None  # 1-based line in the SQL given for the revision
    waived: bool


_UNLINTABLE_HELP = (
    "A revision that reads the database, needs a live connection (batch mode on SQLite) or "
    "uses what is None offline cannot be linted: review its SQL by hand, or make it render "
    "offline (`if context.is_offline_mode(): ...` around its reads)."
)


_READS_ROWS_HELP = (
    "It reads rows from the database (a data migration): offline there is no database to "
    "read, so its SQL cannot be linted. Review what it does by hand; once reviewed, waive "
    "`unlintable` for it."
)


def _reads_rows(reason: str) -> bool:
    # offline, op.get_bind().execute(...) returns None: `.fetchall()` & co. then fail on it
    return (
        "'NoneType' object has no attribute" in reason
        and any(
            f"'{name}'" in reason
            for name in (
                "fetchall",
                "fetchone",
                "fetchmany",
                "scalar",
                "scalars",
                "first",
                "all",
                "one",
                "scalar_one",
                "mappings",
                "__iter__",
            )
        )
        or "'NoneType' object is not iterable" in reason
    )


def unlintable(revision: str, reason: str, waivers: frozenset[str]) -> Finding:
    """The finding for a revision whose SQL could not be rendered offline for linting."""
    reads = _reads_rows(reason)
    return Finding(
        revision=revision,
        rule=UNLINTABLE,
        message=("it reads rows from the database, so " if reads else "")
        + f"it cannot be rendered offline (alembic upgrade --sql) for linting: {reason}",
        help=_READS_ROWS_HELP if reads else _UNLINTABLE_HELP,
        line=None,
        waived=UNLINTABLE in waivers,
    )


class LintError(Exception):
    """squawk itself failed (crash, bad arguments, unparsable output)."""


class SquawkMissing(LintError):
    def __init__(self) -> None:
        super().__init__(
            "squawk executable not found (neither next to the Python interpreter nor on PATH); "
            "install it with `pip install squawk-cli` (it is in the `dev` extra: "
            "`pip install -e '.[dev]'`)"
        )


# ----------------------------------------------------------------------------- waivers

_WAIVER_RE = re.compile(r"#\s*orchestrator\s*:\s*allow\b(?P<rest>[^\n]*)", re.IGNORECASE)
_RULE_TOKEN_RE = re.compile(r"[a-z][a-z0-9-]*")


def expand_aliases(rules: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for rule in (r.strip().lower() for r in rules):
        if not rule:
            continue
        out.add(rule)
        out.update(_RULE_ALIASES.get(rule, ()))
    return out


def parse_waivers(source: str) -> frozenset[str]:
    """Rule names waived by ``# orchestrator: allow <rule>[, <rule> ...]`` lines.

    Rules are separated by commas and/or spaces; the list ends at the first token that is not
    a rule name (``-- reason``, ``(reason)``, another ``#`` ...). Known squawk aliases are
    expanded (``prefer-timestamptz`` also waives ``prefer-timestamp-tz``).
    """
    rules: list[str] = []
    for match in _WAIVER_RE.finditer(source):
        for token in re.split(r"[,\s]+", match.group("rest").strip()):
            if not token:
                continue
            token = token.lower()
            if not _RULE_TOKEN_RE.fullmatch(token):
                break
            rules.append(token)
    return frozenset(expand_aliases(rules))


# ----------------------------------------------------------------------------- squawk binary


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


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.waived]


def rules_by_revision(findings: Iterable[Finding]) -> dict[str, list[str]]:
    """Each revision's rules, in the order found, once each."""
    out: dict[str, list[str]] = {}
    for f in findings:
        rules = out.setdefault(f.revision, [])
        if f.rule not in rules:
            rules.append(f.rule)
    return out


def waiver_advice(env_file: str, rules: Mapping[str, Sequence[str]], has_waivers: bool) -> str:
    """Where and what to add to an environment file to waive `rules` (revision -> rules) on
    that environment only: the exact YAML lines, quoted ids (YAML reads `1e10` as a number)."""
    body = "\n".join(f'    "{rev}": [{", ".join(names)}]' for rev, names in rules.items())
    if has_waivers:
        return f"add to {env_file}, under `policy:` `lint_waivers:`:\n{body}"
    return f"add to {env_file}, under `policy:`:\n  lint_waivers:\n{body}"


def _listed(bad: Sequence[Finding]) -> str:
    return "; ".join(
        f"{f.revision} breaks {f.rule}"
        + (f" (line {f.line} of its SQL)" if f.line is not None else "")
        + f": {f.message.rstrip('.')}"
        for f in bad
    )


def refusal_message(
    env: str,
    bad: Sequence[Finding],
    files: Mapping[str, str],
    env_file: str,
    has_waivers: bool = False,
    predecessor: str | None = None,
) -> str:
    """Why lint refused a run: every finding, each rule's advice once, and the exact lines
    of the environment file that waive them on `env` only. `files`: revision -> file name.

    A waiver in the revision's file changes its checksum: where a `predecessor` ran the
    revision already, that would be drift there, so only the environment file is offered."""
    advice: dict[str, str] = {}
    for f in bad:
        if f.help and f.rule not in advice:
            advice[f.rule] = f.help.rstrip(".")
    helped = " ".join(f"{rule}: {text}." for rule, text in advice.items())
    rules = rules_by_revision(bad)
    text = (
        f"Refused by lint on {env}: {_listed(bad)}. {helped + ' ' if helped else ''}"
        f"Where it is safe on {env}, "
        f"waive it there for these revisions only (the revision files, and their checksums, "
        f"stay as they are): {waiver_advice(env_file, rules, has_waivers)}\n"
    )
    if predecessor is None:
        in_file = "; ".join(
            f"in {files.get(rev, rev)}: "
            + ", ".join(f"`# orchestrator: allow {rule}`" for rule in names)
            for rev, names in rules.items()
        )
        return (
            text + "Or fix the migrations, or, before any environment runs them, waive in the "
            f"revision's file with a line saying why ({in_file})."
        )
    return text + (
        f"Or fix it with a new revision ({predecessor} has run these files: do not edit them)."
    )


def ahead_warning(env: str, bad: Sequence[Finding], env_file: str, has_waivers: bool) -> str:
    """What a later environment's lint will refuse, said before it comes to that."""
    return (
        f"{env} (lint: error) will refuse {_listed(bad)}. Fix it now, or once reviewed waive "
        f"it on {env}: {waiver_advice(env_file, rules_by_revision(bad), has_waivers)}"
    )
