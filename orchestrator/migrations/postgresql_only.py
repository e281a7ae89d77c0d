"""Which revisions use PostgreSQL-only constructs, read from their source (pure).

A history written for PostgreSQL (the `postgresql` dialect's types, `CREATE EXTENSION`,
`gen_random_uuid()`, `::uuid` casts, `ALTER COLUMN ... USING`) cannot run on SQLite: `init`
then says that dev needs a PostgreSQL URL instead of giving it the SQLite default, and `check`
says its scratch database must be PostgreSQL instead of blaming the revision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_CONSTRUCTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "the postgresql dialect",
        re.compile(r"sqlalchemy\.dialects(\.postgresql|\s+import\s+.*\bpostgresql\b)"),
    ),
    ("CREATE EXTENSION", re.compile(r"\bCREATE\s+EXTENSION\b", re.IGNORECASE)),
    ("gen_random_uuid()", re.compile(r"\bgen_random_uuid\s*\(")),
    ("uuid_generate_v4()", re.compile(r"\buuid_generate_v\d\w*\s*\(")),
    (
        "a :: cast",
        re.compile(r"\w::(uuid|text|int|integer|bigint|jsonb?|timestamptz|regclass)\b", re.I),
    ),
    (
        "ALTER COLUMN ... USING",
        re.compile(r"\bpostgresql_using\s*=|\bTYPE\s+\w+\s+USING\b", re.IGNORECASE),
    ),
    ("CREATE TYPE", re.compile(r"\bCREATE\s+TYPE\b", re.IGNORECASE)),
    ("a DO block", re.compile(r"\bDO\s+\$\$|\bLANGUAGE\s+plpgsql\b", re.IGNORECASE)),
)


@dataclass(frozen=True)
class Construct:
    revision: str
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.revision} ({self.file}, line {self.line}: {self.what})"


def constructs_in(source: str) -> list[tuple[int, str]]:
    """(line, what) of each PostgreSQL-only construct in a revision's source; comments and
    the docstring's prose count too, which errs on the side of saying so."""
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        for what, pattern in _CONSTRUCTS:
            if pattern.search(line):
                found.append((number, what))
                break
    return found


def postgresql_only(revisions: Iterable[tuple[str, Path]]) -> list[Construct]:
    """The first PostgreSQL-only construct of each revision that has one, oldest first as
    given: (revision id, file) pairs in, what names them out."""
    out = []
    for revision, path in revisions:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        found = constructs_in(source)
        if found:
            line, what = found[0]
            out.append(Construct(revision, path.name, line, what))
    return out


def summary(found: list[Construct], limit: int = 3) -> str:
    shown = "; ".join(str(c) for c in found[:limit])
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return shown + more
