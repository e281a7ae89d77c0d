"""A signing run's part in its database's evidence chain: verify before writing, one entry
per ledger row, and a signed end entry over the audit rows it proved (SPEC Part 3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core import chain
from orchestrator.core.errors import Refused
from orchestrator.db.database import Recover, describe_error, psycopg_style, run_batch
from orchestrator.db.locks import Fence
from orchestrator.evidence import chain as store
from orchestrator.evidence import ledger
from orchestrator.evidence.audit_proof import AuditProof, prove_audit
from orchestrator.running.liveness import LIVE_SESSIONS, run_ids_of

if TYPE_CHECKING:
    from orchestrator.core import signing
    from orchestrator.evidence.audit import AuditTrail


class RunEvidence:
    """Made once the run holds its lock (or, for a run that never took it, at its end)."""

    def __init__(
        self,
        key: signing.PrivateKey,
        keys: Sequence[signing.PublicKey],
        env: str,
        target: str,
        run_id: str,
    ) -> None:
        self.key, self.keys, self.env, self.target, self.run_id = key, keys, env, target, run_id
        self.writer: store.Writer | None = None
        self.witnessed: list[dict[str, Any]] = []  # predecessor heads the gate relied on
        self.audit_head: tuple[int, str] | None = None
        self.problem: str | None = None  # what verify found (kept for keys repair)
        self.evidence: store.Evidence | None = None

    @property
    def empty(self) -> bool:
        return self.writer is not None and self.writer.head is None

    def verify(
        self,
        connection: Connection,
        live: set[str] | None,
        allow_missing: bool = False,
        repairing: bool = False,
    ) -> None:
        """Before this run writes anything of evidence: its chain, and the audit rows since
        the last end entry, must verify; else Refused (exit 3), nothing signed."""
        evidence = store.read_evidence(connection, self.keys, self.env)
        if allow_missing:
            evidence.missing = False
        problem = evidence.problem or store.ledger_problem(connection, evidence)
        if problem is None and evidence.verdict.head is not None:
            proof = prove_audit(connection, evidence, self.run_id, live)
            if proof.problem is not None:
                problem = f"{self.env}'s audit trail does not verify: {proof.problem}"
        self.problem = problem
        self.evidence = evidence
        if problem is not None and not repairing:
            raise Refused(
                f"Refused: {problem}. This run signs nothing after evidence it cannot prove, "
                f"so nothing was changed. Find out what happened to {self.target}'s database; "
                f"`orchestrator keys repair {self.env} --reason ...` (the key holder) records "
                "it and lets runs go on."
            )
        self.writer = store.Writer(
            self.key, self.keys, self.env, evidence.database, evidence.verdict.head
        )

    def moved(self, connection: Connection, reason: str, actor: str, at: str) -> None:
        """The first entry of an install that had no chain: what is there now (the ledger's
        last row, the audit chain's last row) is where its signed history starts."""
        assert self.writer is not None and self.writer.head is None
        content = store.current_extent(connection) | {
            "run_id": self.run_id,
            "reason": reason,
            "actor": actor,
            "at": at,
            "target": self.target,
        }
        self.writer.append(connection, "moved", content)

    def repair(self, connection: Connection, reason: str, actor: str, at: str) -> str | None:
        """Append the signed `repair` entry after the last good one, past every stored entry,
        naming the first bad one: readers skip the span between (not believed)."""
        assert self.writer is not None and self.evidence is not None
        if self.problem is None:
            return None
        verdict = self.evidence.verdict
        head = verdict.head
        broken_from = verdict.broken[0] if verdict.broken else (head[0] + 1 if head else 1)
        stored = max((row["seq"] for row in self.evidence.rows), default=0)
        content = store.current_extent(connection) | {
            "run_id": self.run_id,
            "broken_from": broken_from,
            "problem": self.problem,
            "reason": reason,
            "actor": actor,
            "at": at,
            "target": self.target,
        }
        self.writer.append(connection, "repair", content, seq=max(stored, broken_from - 1) + 1)
        return self.problem

    def record(
        self, connection: Connection, row: Mapping[str, Any], fence: Fence | None = None
    ) -> bool:
        """The entry of one ledger row, in its transaction; False: the fence did not hold."""
        assert self.writer is not None
        content = store.ledger_content(row, self.target)
        return self.writer.append(connection, "ledger", content, fence)

    def record_all(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """The entries of a run's ledger rows, in its one transaction (`transaction: per-run`),
        in two round trips (chain.Writer.append_all)."""
        assert self.writer is not None
        contents = [store.ledger_content(row, self.target) for row in rows]
        self.writer.append_all(connection, "ledger", contents)

    def at_commit(
        self, row: Mapping[str, Any], fence: Fence
    ) -> tuple[list[tuple[str, dict[str, Any]]], Recover]:
        """The entry of one ledger row as statements sent with its transaction's COMMIT, and
        how to recover where another run's entry came first (chain.Writer.at_commit)."""
        assert self.writer is not None
        return self.writer.at_commit("ledger", store.ledger_content(row, self.target), fence)

    def end(self, engine: Engine, at: str, outcome: str | None, live: set[str] | None) -> str:
        """Sign the run's end over the audit rows it proved; '' when written, else why not."""
        try:
            with engine.begin() as connection:
                if self.writer is None:  # never took the lock: verify now
                    self.verify(connection, live)
                assert self.writer is not None
                # again, as it is now: other runs may have ended meanwhile, and the audit
                # rows since the last pin, ours among them, are what this entry signs over
                evidence = store.read_evidence(
                    connection, self.keys, self.env, database=self.writer.database
                )
                if evidence.problem is not None:
                    return evidence.problem
                self.writer.head = evidence.verdict.head
                proof = prove_audit(connection, evidence, self.run_id, live)
                if proof.problem is not None:
                    return proof.problem
                self.writer.append(connection, "end", self._end_content(outcome, at, proof))
                self.audit_head = proof.head
        except Refused as exc:
            return exc.message
        except store.Broken as exc:
            return str(exc)
        except SQLAlchemyError as exc:
            return describe_error(exc)
        return ""

    def end_at_once(
        self,
        connection: Connection,
        outcome: str | None,
        checkpoint: Callable[..., dict[str, Any]],
        at: str,
        audit: AuditTrail | None = None,
    ) -> str | None:
        """The run's end in one transaction of two round trips, on PostgreSQL: BEGIN, the
        locks, the records `audit` still holds (the run's last: lock.released) appended, and
        every read (the entries since the chain verified, the audit rows since its pin, the
        ledger's extent, the live sessions); then the checkpoint (`checkpoint` signs it,
        given the audit head and the ledger's extent), the signed end entry and COMMIT. ''
        when written (`audit` then holds nothing), else why not; None where it cannot be
        done this way (not psycopg, or the chain did not verify at the start): the caller
        ends step by step, and writes what `audit` still holds.
        `checkpoint(audit=, ledger_id=, signed_from=)`: the checkpoint row to write."""
        if (
            connection.dialect.driver != "psycopg"
            or self.writer is None
            or self.evidence is None
            or self.problem is not None
        ):
            return None
        verified = self.evidence.verdict
        pin = chain.last_end(verified)
        audit_from = max(int(pin.content.get("audit_id") or 0) if pin else 0, 1)
        pending = audit.pending if audit is not None else []
        appends = ledger.append_statements(pending) if pending else []
        try:
            reads = run_batch(
                connection,
                [
                    ("BEGIN", {}),
                    # the audit chain's lock, then the evidence chain's: the order of a revision's
                    # transaction (its audit rows, then its entry at COMMIT)
                    ("SELECT pg_advisory_xact_lock(%(a)s), pg_advisory_xact_lock(%(e)s)",
                     {"a": ledger.CHAIN_LOCK_KEY, "e": store.EVIDENCE_LOCK_KEY}),
                    *appends,
                    (psycopg_style(store.NEWER), {"s": verified.head[0] if verified.head else 0}),
                    (f"SELECT * FROM {ledger.AUDIT_TABLE} WHERE id >= %(a)s ORDER BY id",
                     {"a": audit_from}),
                    (ledger.LEDGER_EXTENT, {}),
                    (LIVE_SESSIONS, {}),
                ],
            )  # fmt: skip
            if reads is None:
                return None
            # rows come back from the statements that return some: the locks, the appends'
            # lock and their last INSERT, then each read
            written = ledger.appended(pending, reads[2][0]) if pending else None
            newer, audit_rows, (extent,), sessions = reads[3 if pending else 1 :]
            problem = self._end_rows(
                connection, newer, (audit_from, audit_rows), outcome, at, sessions
            )
            if isinstance(problem, str):
                connection.exec_driver_sql("ROLLBACK")
                return problem
            end_row, head = problem
            statements = [(store.INSERT_ENTRY, end_row)]
            if head is not None:
                row = checkpoint(
                    audit=head,
                    ledger_id=int(extent["ledger_id"] or 0),
                    signed_from=extent["signed_from"],
                )
                statements.insert(0, (ledger.INSERT_CHECKPOINT, row))
            run_batch(connection, [*statements, ("COMMIT", {})])
        except BaseException:
            with suppress(SQLAlchemyError):
                connection.exec_driver_sql("ROLLBACK")
            raise
        assert self.writer is not None
        self.writer.head = (end_row["seq"], end_row["hash"])
        self.audit_head = head
        if audit is not None and written is not None:
            audit.written_with(pending, written)
        return ""

    def _end_rows(
        self,
        connection: Connection,
        newer: Sequence[Mapping[str, Any]],
        audit_rows: tuple[int, Sequence[dict[str, Any]]],
        outcome: str | None,
        at: str,
        sessions: Sequence[Mapping[str, Any]],
    ) -> str | tuple[dict[str, Any], tuple[int, str] | None]:
        """The end entry's row over what was read, and the audit head it pins; or why none
        may be signed."""
        assert self.writer is not None and self.evidence is not None
        verified = self.evidence.verdict
        database = self.writer.database
        since = chain.verify_chain(
            newer, self.keys, env=self.env, database=database, start=verified.head
        )
        if since.broken is not None:
            return f"{self.env}'s evidence is broken at entry {since.broken[0]}: {since.broken[1]}"
        whole = store.Evidence(
            self.env,
            database,
            chain.Verdict([*verified.entries, *since.entries], head=since.head or verified.head),
        )
        live = run_ids_of(s["application_name"] for s in sessions)
        proof = prove_audit(connection, whole, self.run_id, live, audit_rows)
        if proof.problem is not None:
            return proof.problem
        last, prev = whole.verdict.head or (0, chain.GENESIS)
        row = chain.build_entry(
            self.key,
            env=self.env,
            database=database,
            seq=last + 1,
            prev=prev,
            kind="end",
            content=self._end_content(outcome, at, proof),
        )
        return row, proof.head

    def _end_content(self, outcome: str | None, at: str, proof: AuditProof) -> dict[str, Any]:
        content: dict[str, Any] = {
            "run_id": self.run_id,
            "outcome": outcome,
            "target": self.target,
            "at": at,
            "audit_id": proof.head[0] if proof.head else 0,
            "audit_hash": proof.head[1] if proof.head else ledger.GENESIS,
            "witnessed": self.witnessed,
        }
        if proof.killed:
            content["killed"] = list(proof.killed)
        if proof.open:
            content["open"] = list(proof.open)
        return content

    def head(self) -> dict[str, Any] | None:
        """The `evidence_head` of the run's --json result."""
        if self.writer is None or self.writer.head is None:
            return None
        seq, digest = self.writer.head
        return {
            "env": self.env,
            "database": self.writer.database,
            "seq": seq,
            "hash": digest,
            # what the successor relied on; not what the chain proved up to it (long)
            "witnessed": [{k: v for k, v in w.items() if k != "snapshot"} for w in self.witnessed],
        }
