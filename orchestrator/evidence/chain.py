"""A signing environment's evidence chain in its database: read and verify it, prove the
audit rows since the last run's end, and append entries (core/chain.py says what they are).

Every reader verifies before it believes; every writer verifies before it signs, and
appends under a transaction-scoped lock (PostgreSQL) so that two writers never fork it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from orchestrator.core import chain
from orchestrator.db.database import (
    VERSION_TABLE,
    Recover,
    has_table,
    prefetched,
    psycopg_style,
    run_batch,
    table_names,
)
from orchestrator.db.locks import FENCE_SQL, Fence
from orchestrator.evidence import ledger

if TYPE_CHECKING:
    from orchestrator.core import signing

EVIDENCE_LOCK_KEY = 0x6F72657669646E63  # "orevidnc": serialises appends to the chain
_COLUMNS = "seq, kind, run_id, envelope"


_IDENTITY = "orchestrator_database_identity"
_PG_IDENTITY = (
    "(SELECT 'postgresql:' || system_identifier || '/' || current_database()"
    " FROM pg_catalog.pg_control_system())"
)


def database_identity(connection: Connection) -> str:
    """Who this database is, in terms the deploy role does not choose. PostgreSQL: the
    cluster's system_identifier (fixed at initdb) and the database's name. SQLite: the
    database file's real path (a copy elsewhere is another database). Asked once per
    connection (a connection is to one database for its life)."""
    known = connection.info.get(_IDENTITY)
    if known is not None:
        return str(known)
    if connection.dialect.name == "postgresql":
        found = prefetched(connection, "identity")
        if found:
            system, name = tuple(found[0].values())
            identity = f"postgresql:{system}/{name}"
        else:
            identity = connection.execute(text(f"SELECT {_PG_IDENTITY}")).scalar_one()
        connection.info[_IDENTITY] = identity
        return str(identity)
    files = connection.exec_driver_sql("PRAGMA database_list").all()
    path = next((row[2] for row in files if row[1] == "main"), "") or ":memory:"
    return f"sqlite:{os.path.realpath(path) if path != ':memory:' else path}"


IDENTITY = "SELECT system_identifier::text, current_database() FROM pg_catalog.pg_control_system()"
NEWER = f"SELECT {_COLUMNS} FROM {ledger.CHAIN_TABLE} WHERE seq > :s ORDER BY seq"
# an entry appended by a writer that holds the chain's lock (psycopg parameters)
INSERT_ENTRY = (
    f"INSERT INTO {ledger.CHAIN_TABLE} ({_COLUMNS})"
    " VALUES (%(seq)s, %(kind)s, %(run_id)s, %(envelope)s)"
)
_LOCK_AT_COMMIT = "SELECT pg_advisory_xact_lock(%(k)s)"
# an entry sent with its transaction's COMMIT: it fails, rather than write nothing, where
# another entry holds its place or the lock session lost the lock (the COMMIT never runs)
_APPEND_AT_COMMIT = psycopg_style(
    f"WITH appended AS (INSERT INTO {ledger.CHAIN_TABLE} ({_COLUMNS})"
    " SELECT :seq, :kind, :run_id, :envelope WHERE NOT EXISTS"
    f" (SELECT 1 FROM {ledger.CHAIN_TABLE} WHERE seq >= :seq) AND {FENCE_SQL} RETURNING 1)"
    " SELECT CASE WHEN EXISTS (SELECT 1 FROM appended) THEN true ELSE"
    " ('orchestrator: the evidence chain moved, or the lock was lost (backend '"
    " || pg_backend_pid() || ')')::boolean END"
)


ALL_ROWS = psycopg_style(NEWER), {"s": 0}  # what read_rows reads ahead of a whole chain


def read_rows(connection: Connection, after: int = 0) -> list[dict[str, Any]]:
    """Stored entries with seq > `after`, oldest first ([] when there is no chain table)."""
    if not has_table(connection, ledger.CHAIN_TABLE):
        return []
    found = prefetched(connection, "chain") if after == 0 else None
    if found is not None:
        return list(found)
    rows = connection.execute(text(NEWER), {"s": after})
    return [dict(row._mapping) for row in rows]


def holds_a_schema(connection: Connection) -> bool:
    """A version table with a revision, or tables besides ours: something was migrated."""
    if (
        has_table(connection, VERSION_TABLE)
        and connection.execute(text(f"SELECT 1 FROM {VERSION_TABLE} LIMIT 1")).first()
    ):
        return True
    names = table_names(connection) - ledger.OWN_TABLES - {VERSION_TABLE}
    return bool(names)


@dataclass
class Evidence:
    """One database's chain as read and verified."""

    env: str
    database: str
    verdict: chain.Verdict
    missing: bool = False  # a migrated schema with no chain at all
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problem(self) -> str | None:
        if self.missing:
            return (
                f"{self.env}'s evidence is missing: its database holds a migrated schema but "
                "no signed evidence chain (deleted or hidden; or an install of an earlier "
                f"release: `orchestrator keys adopt {self.env} --reason ...` moves it to the "
                f"chain; `orchestrator keys repair {self.env} --reason ...` records a loss)"
            )
        if self.verdict.broken is not None:
            seq, why = self.verdict.broken
            return f"{self.env}'s evidence is broken at entry {seq}: {why}"
        return None

    def head(self, at: str | None = None) -> chain.Head | None:
        if self.verdict.head is None:
            return None
        seq, digest = self.verdict.head
        return chain.Head(self.env, self.database, seq, digest, at)


def read_evidence(
    connection: Connection,
    keys: Sequence[signing.PublicKey],
    env: str,
    seen: Mapping[str, chain.Head] | None = None,
    database: str | None = None,
    stored: tuple[int, Sequence[dict[str, Any]]] | None = None,
) -> Evidence:
    """Read and verify a database's chain (one query, one signature when intact): from the
    head a successor witnessed with what the chain proved up to it (`seen`, per database),
    so that a long history costs what its newest entries cost; else all of it. `database`:
    its identity, where the caller read it already on this connection's database.
    `stored`: (n, the stored entries with seq > n) where the caller read them already (in a
    batch of reads); what it lacks is read here."""
    database = database or database_identity(connection)

    def rows_after(after: int) -> list[dict[str, Any]]:
        if stored is not None and stored[0] <= after:
            return [row for row in stored[1] if row["seq"] > after]
        return read_rows(connection, after)

    witnessed = (seen or {}).get(database)
    if witnessed is not None and witnessed.snapshot:
        rows = rows_after(witnessed.seq - 1)
        verdict = chain.continue_chain(rows, keys, env=env, database=database, witnessed=witnessed)
        if verdict is not None:
            return Evidence(env, database, verdict, False, rows)
    rows = rows_after(0)
    verdict = chain.verify_chain(rows, keys, env=env, database=database)
    missing = not rows and holds_a_schema(connection)
    return Evidence(env, database, verdict, missing, rows)


def recent_ends(connection: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The newest end entries, newest first (where a successor's witnesses are)."""
    if not has_table(connection, ledger.CHAIN_TABLE):
        return []
    # the database's identity in the same round trip, where the caller will ask it next
    identity = f", {_PG_IDENTITY} AS identity" if connection.dialect.name == "postgresql" else ""
    rows = connection.execute(
        text(
            f"SELECT {_COLUMNS}{identity} FROM {ledger.CHAIN_TABLE} WHERE kind = 'end'"
            " ORDER BY seq DESC LIMIT :n"
        ),
        {"n": limit},
    )
    ends = [dict(row._mapping) for row in rows]
    if ends and identity:
        connection.info[_IDENTITY] = ends[0]["identity"]
    return [{k: v for k, v in end.items() if k != "identity"} for end in ends]


def signed_witnesses(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[signing.PublicKey],
    env: str,
    database: str,
    predecessor: str,
) -> list[chain.Head]:
    """The predecessor heads that `rows` (end entries of `env`) witnessed, each entry's
    signature and place (env, database, seq) checked on its own."""
    from orchestrator.core import signing

    heads: list[chain.Head] = []
    for row in rows:
        verdict = signing.verify(row["envelope"], keys, chain.ENTRY_TYPE)
        if not verdict.valid:
            continue
        try:
            signed = verdict.payload_json()
        except ValueError:
            continue
        if (
            not isinstance(signed, dict)
            or signed.get("env") != env
            or signed.get("database") != database
            or signed.get("seq") != row["seq"]
        ):
            continue
        one = chain.Verdict([chain.Entry(row["seq"], "end", signed.get("content") or {}, "")])
        heads += chain.witnessed_heads(one, predecessor)
    return heads


def current_extent(connection: Connection) -> dict[str, Any]:
    """The ledger's and the audit chain's last rows now: what a `moved` or `repair` entry
    starts the signed history after."""
    ledger_max = connection.execute(text(f"SELECT max(id) FROM {ledger.LEDGER_TABLE}")).scalar()
    audit_last = connection.execute(
        text(f"SELECT id, hash FROM {ledger.AUDIT_TABLE} ORDER BY id DESC LIMIT 1")
    ).first()
    return {
        "ledger_id": int(ledger_max or 0),
        "audit_id": int(audit_last[0]) if audit_last else 0,
        "audit_hash": str(audit_last[1]) if audit_last else ledger.GENESIS,
    }


def ledger_problem(connection: Connection, evidence: Evidence) -> str | None:
    """Whether the ledger table says what the chain says: each chained row present once,
    and no signed row the chain does not record (a replayed or copied one)."""
    from collections import Counter

    fields = ("revision", "checksum", "direction", "run_id", "at")
    # rows from before the chain (re)started (a `moved` or `repair` entry names the ledger's
    # last row then) are no evidence here: what counts of them was signed again after it
    start = chain.last_restart(evidence.verdict)
    before = int(start.content.get("ledger_id") or 0) if start else 0
    since = chain.Verdict(
        [e for e in evidence.verdict.entries if start is None or e.seq > start.seq]
    )
    chained = chain.ledger_rows(since)
    if not chained:
        return None
    table = Counter(
        tuple(row.get(f) for f in fields)
        for row in ledger.ledger_table_rows(connection)
        if row.get("envelope") and row["id"] > before
    )
    for row in chained:
        key = tuple(row.get(f) for f in fields)
        if table[key] > 0:
            table[key] -= 1
        else:
            return (
                f"{evidence.env}'s evidence is broken at entry {row['seq']}: its ledger row "
                f"({row.get('revision')} {row.get('direction')}) is missing from the ledger "
                "table (deleted or replaced)"
            )
    extra = [key for key, n in table.items() if n > 0]
    if extra:
        return (
            f"{evidence.env}'s ledger table holds a signed row that no entry of its chain "
            f"records ({extra[0][0]} {extra[0][2]} of run {extra[0][3]}): replayed or copied"
        )
    return None


# -- writing -----------------------------------------------------------------------------


class Broken(Exception):
    """The chain cannot be appended to: what is wrong, for a refusal (exit 3)."""


@dataclass
class Writer:
    """Appends entries for one run after its chain verified up to `head`."""

    key: signing.PrivateKey
    keys: Sequence[signing.PublicKey]
    env: str
    database: str
    head: tuple[int, str] | None  # (seq, hash) of the newest verified entry

    def append(
        self,
        connection: Connection,
        kind: str,
        content: Mapping[str, Any],
        fence: Fence | None = None,
        seq: int | None = None,
    ) -> bool:
        """Append one entry in the caller's transaction; False when the fence no longer
        holds (nothing written: the caller rolls back). `seq`: a repair's place, past every
        stored entry (it links to the last good one, not to them)."""
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVIDENCE_LOCK_KEY})
        for _ in range(3):
            row = self._entry(kind, content, seq)
            fenced = f" AND {FENCE_SQL}" if fence is not None else ""
            written = connection.execute(
                text(
                    f"INSERT INTO {ledger.CHAIN_TABLE} ({_COLUMNS})"
                    " SELECT :seq, :kind, :run_id, :envelope WHERE NOT EXISTS"
                    f" (SELECT 1 FROM {ledger.CHAIN_TABLE} WHERE seq >= :seq){fenced}"
                ),
                {**{k: row[k] for k in ("seq", "kind", "run_id", "envelope")}}
                | (fence.params() if fence is not None else {}),
            ).rowcount
            if written == 1:
                self.head = (row["seq"], row["hash"])
                return True
            if (
                fence is not None
                and not connection.execute(text(f"SELECT {FENCE_SQL}"), fence.params()).scalar()
            ):
                return False
            self._catch_up(connection)  # another run's end entry came first
        raise Broken(f"{self.env}'s evidence chain kept moving while this run appended to it")

    def _entry(
        self, kind: str, content: Mapping[str, Any], seq: int | None = None
    ) -> dict[str, Any]:
        """The stored row of the entry after this writer's head (at `seq`: a repair's place)."""
        last, prev = self.head if self.head else (0, chain.GENESIS)
        return chain.build_entry(
            self.key,
            env=self.env,
            database=self.database,
            seq=seq if seq is not None else last + 1,
            prev=prev,
            kind=kind,
            content=content,
        )

    def append_all(
        self, connection: Connection, kind: str, contents: Sequence[Mapping[str, Any]]
    ) -> None:
        """Append entries in the caller's transaction, in order: on PostgreSQL in two round
        trips whatever their number (the chain's lock with the entries appended since this
        writer's head, which are verified first; then every insert), not two per entry. For
        a run in one transaction (`transaction: per-run`), whose COMMIT is fenced."""
        if not contents:
            return
        after = self.head[0] if self.head else 0
        batch = (
            run_batch(
                connection,
                [(_LOCK_AT_COMMIT, {"k": EVIDENCE_LOCK_KEY}), (psycopg_style(NEWER), {"s": after})],
            )
            if connection.dialect.name == "postgresql"
            else None
        )
        if batch is None:
            for content in contents:
                self.append(connection, kind, content)
            return
        self._believe(batch[-1])  # another run's end entry may have come first
        rows = []
        for content in contents:
            row = self._entry(kind, content)
            rows.append((INSERT_ENTRY, row))
            self.head = (row["seq"], row["hash"])
        run_batch(connection, rows)

    def at_commit(
        self, kind: str, content: Mapping[str, Any], fence: Fence
    ) -> tuple[list[tuple[str, dict[str, Any]]], Recover]:
        """One entry as statements to send with the transaction's COMMIT (psycopg parameters,
        db.database.commit_with), and how to recover where another writer came first: the
        insert fails rather than write nothing, the transaction goes back to before it, and
        `recover` catches up on the newer entries and says the statements that append after
        them. Fails (so the caller's COMMIT never runs) where the fence does not hold."""

        def statements() -> list[tuple[str, dict[str, Any]]]:
            row = self._entry(kind, content)
            self.head = (row["seq"], row["hash"])  # the run's end re-reads it if this fails
            entry = {k: row[k] for k in ("seq", "kind", "run_id", "envelope")}
            return [
                (_LOCK_AT_COMMIT, {"k": EVIDENCE_LOCK_KEY}),
                (_APPEND_AT_COMMIT, entry | fence.params()),
            ]

        before = self.head

        def recover(raw: Any) -> list[tuple[str, dict[str, Any]]]:
            with raw.cursor() as cursor:
                cursor.execute(psycopg_style(f"SELECT {FENCE_SQL}"), fence.params())
                if not cursor.fetchone()[0]:
                    raise Broken("the migration lock was lost before the revision could commit")
                cursor.execute(_LOCK_AT_COMMIT, {"k": EVIDENCE_LOCK_KEY})
                after = before[0] if before else 0
                cursor.execute(psycopg_style(NEWER), {"s": after})
                names = [c.name for c in cursor.description or ()]
                newer = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            self.head = before
            self._believe(newer)
            return statements()

        return statements(), recover

    def _catch_up(self, connection: Connection) -> None:
        after = self.head[0] if self.head else 0
        self._believe(read_rows(connection, after))

    def _believe(self, newer: Sequence[Mapping[str, Any]]) -> None:
        """Entries appended after this writer's head by others: verified, then the head."""
        verdict = chain.verify_chain(
            newer, self.keys, env=self.env, database=self.database, start=self.head
        )
        if verdict.broken is not None:
            seq, why = verdict.broken
            raise Broken(f"{self.env}'s evidence is broken at entry {seq}: {why}")
        self.head = verdict.head


def ledger_content(row: Mapping[str, Any], target: str) -> dict[str, Any]:
    """What a ledger entry says: the row's columns (no envelope) and where."""
    content = {k: v for k, v in row.items() if k not in ("id", "envelope") and v is not None}
    return content | {"target": target}
