"""Pure: what an environment signs (ledger rows, audit checkpoints) and how that evidence is
checked. Rows, envelopes and public keys in; verdicts out. No database, no files.

A signed ledger row's payload repeats the row's columns plus the database it was written on
(env and target); a row counts only when its envelope verifies AND says what the columns say.
A checkpoint signs the audit chain's head (last id and hash) and the ledger's last id at the
end of a run; `verify_signed_trail` checks the tables against every checkpoint. A recorded
schema (its fingerprint and catalog stamp at some heads) is signed like a ledger row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography costs ~80 ms to import: only where something is signed
    from orchestrator.core import signing

LEDGER_TYPE = "application/vnd.alembic-orchestrator.evidence.ledger-row+json"
CHECKPOINT_TYPE = "application/vnd.alembic-orchestrator.evidence.audit-checkpoint+json"
LEDGER_FIELDS = ("revision", "checksum", "direction", "run_id", "env", "actor", "at")
SCHEMA_TYPE = "application/vnd.alembic-orchestrator.schema.description-record+json"
SCHEMA_FIELDS = ("heads", "fingerprint", "stamp", "run_id", "env", "actor", "at")


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ledger_payload(row: Mapping[str, Any], target: str) -> bytes:
    """What a signing environment signs for one ledger row (columns + the database)."""
    record = {field: row[field] for field in LEDGER_FIELDS}
    record["target"] = target
    for key, value in row.items():  # extra facts (e.g. `accepted` old checksum) go in too
        if key not in record and key not in ("id", "envelope") and value is not None:
            record[key] = value
    return canonical_bytes(record)


def schema_payload(row: Mapping[str, Any], target: str) -> bytes:
    """What a signing environment signs for one recorded schema: its fingerprint and catalog
    stamp at its heads (the description is checked against the fingerprint), and where."""
    return canonical_bytes({**{field: row[field] for field in SCHEMA_FIELDS}, "target": target})


def checkpoint_payload(
    *,
    env: str,
    target: str,
    run_id: str,
    audit_id: int,
    audit_hash: str,
    ledger_id: int,
    ledger_signed_from: int | None,
    at: str,
) -> bytes:
    """`ledger_id`: the ledger's last row; `ledger_signed_from`: its first signed row (every
    later row must be signed, so stripping signatures is caught)."""
    return canonical_bytes(
        {
            "env": env,
            "target": target,
            "run_id": run_id,
            "audit_id": audit_id,
            "audit_hash": audit_hash,
            "ledger_id": ledger_id,
            "ledger_signed_from": ledger_signed_from,
            "at": at,
        }
    )


def ledger_row_problem(
    row: Mapping[str, Any], keys: Sequence[signing.PublicKey], env: str, target: str
) -> str | None:
    """None when `row` is signed by one of `keys` for this database and says what it signed;
    else why not."""
    return _signed_row_problem(row, keys, env, target, LEDGER_TYPE, LEDGER_FIELDS)


def schema_row_problem(
    row: Mapping[str, Any], keys: Sequence[signing.PublicKey], env: str, target: str
) -> str | None:
    """`ledger_row_problem` for a row of the recorded schemas."""
    return _signed_row_problem(row, keys, env, target, SCHEMA_TYPE, SCHEMA_FIELDS)


def _signed_row_problem(
    row: Mapping[str, Any],
    keys: Sequence[signing.PublicKey],
    env: str,
    target: str,
    payload_type: str,
    fields: Sequence[str],
) -> str | None:
    from orchestrator.core import signing

    envelope = row.get("envelope")
    if not envelope:
        return "it is not signed"
    verdict = signing.verify(envelope, keys, payload_type)
    if not verdict.valid:
        return f"its signature does not verify ({verdict.reason})"
    try:
        signed = verdict.payload_json()
    except ValueError:
        return "its signed payload is not JSON"
    if not isinstance(signed, dict):
        return "its signed payload is not an object"
    if signed.get("env") != env or signed.get("target") != target:
        return (
            f"it was signed for {signed.get('env')}/{signed.get('target')}, "
            f"not {env}/{target} (copied from another database)"
        )
    for field in fields:
        if signed.get(field) != row.get(field):
            return f"its {field} differs from what was signed"
    return None


@dataclass(frozen=True)
class Checkpoint:
    id: int
    run_id: str
    audit_id: int
    audit_hash: str
    ledger_id: int
    ledger_signed_from: int | None
    at: str


def read_checkpoint(
    row: Mapping[str, Any], keys: Sequence[signing.PublicKey], env: str, target: str
) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint a stored row proves, or why it proves nothing."""
    from orchestrator.core import signing

    verdict = signing.verify(row.get("envelope") or "", keys, CHECKPOINT_TYPE)
    if not verdict.valid:
        return None, f"its signature does not verify ({verdict.reason})"
    try:
        signed = verdict.payload_json()
        checkpoint = Checkpoint(
            row["id"],
            str(signed["run_id"]),
            int(signed["audit_id"]),
            str(signed["audit_hash"]),
            int(signed["ledger_id"]),
            None if signed.get("ledger_signed_from") is None else int(signed["ledger_signed_from"]),
            str(signed["at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None, "its signed payload is not a checkpoint"
    if signed.get("env") != env or signed.get("target") != target:
        return None, f"it was signed for {signed.get('env')}/{signed.get('target')}"
    if row.get("audit_id") != checkpoint.audit_id or row.get("audit_hash") != (
        checkpoint.audit_hash
    ):
        return None, "its columns differ from what was signed"
    return checkpoint, None


@dataclass(frozen=True)
class Finding:
    kind: str  # row | checkpoint | ledger row | database
    id: int | None
    timestamp: str | None
    problem: str


def verify_signed_trail(
    *,
    audit_rows: Sequence[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    ledger_rows: Sequence[Mapping[str, Any]],
    keys: Sequence[signing.PublicKey],
    env: str,
    target: str,
    at_revision: bool,
) -> Finding | None:
    """The first thing that a signing environment's tables fail to prove, or None.

    `audit_rows` must already form an intact hash chain (ledger.verify_chain). What a writer
    of the database could still do to such a chain, and what catches it here:
    edit a row and re-hash the rest -> a checkpoint's hash no longer matches its row;
    truncate or drop the audit table -> a checkpoint names a row that is gone, or signed
    ledger rows are covered by no checkpoint; append forged rows -> rows past the last
    checkpoint; forge or edit ledger rows -> their signature. Rows of a run still going are
    not proven yet either: no exemption an attacker could claim (a session's name is forgeable).
    """
    by_id = {row["id"]: row for row in audit_rows}
    last_row = audit_rows[-1]["id"] if audit_rows else 0
    proven: list[Checkpoint] = []
    for row in checkpoints:
        checkpoint, problem = read_checkpoint(row, keys, env, target)
        at = row.get("at")
        if checkpoint is None:
            return Finding("checkpoint", row["id"], at, problem or "invalid")
        audited = by_id.get(checkpoint.audit_id)
        if audited is None:
            return Finding(
                "checkpoint",
                row["id"],
                checkpoint.at,
                f"it signed audit row {checkpoint.audit_id}, which is gone "
                f"(the audit table holds {len(audit_rows)} rows, up to id {last_row}): "
                "rows were deleted, or the table truncated or dropped",
            )
        if audited["hash"] != checkpoint.audit_hash:
            return Finding(
                "checkpoint",
                row["id"],
                checkpoint.at,
                f"it signed audit row {checkpoint.audit_id} with hash "
                f"{checkpoint.audit_hash[:12]}, the row now hashes to {audited['hash'][:12]}: "
                f"the chain up to row {checkpoint.audit_id} was edited and re-hashed",
            )
        proven.append(checkpoint)
    ledger_ids = {row["id"] for row in ledger_rows}
    covered_ledger = max((c.ledger_id for c in proven), default=0)
    if covered_ledger and covered_ledger not in ledger_ids:
        last = proven[-1]
        return Finding(
            "checkpoint",
            last.id,
            last.at,
            f"it signed ledger rows up to id {covered_ledger}, which is gone: ledger rows "
            "were deleted, or the ledger truncated",
        )
    first_signed = min(
        [row["id"] for row in ledger_rows if row.get("envelope")]
        + [c.ledger_signed_from for c in proven if c.ledger_signed_from is not None],
        default=None,
    )
    for row in ledger_rows:
        if first_signed is None or row["id"] < first_signed:
            continue  # rows that predate signing: unsigned evidence, reported by status/plan
        problem = ledger_row_problem(row, keys, env, target)
        if problem:
            return Finding("ledger row", row["id"], row.get("at"), problem)
        if row["id"] > covered_ledger:
            return Finding(
                "ledger row",
                row["id"],
                row.get("at"),
                f"revision {row['revision']} (run {row['run_id']}) is covered by no signed "
                "checkpoint: the audit trail or its checkpoints were removed (a run killed "
                "mid-way is covered by the next run)",
            )
    covered_audit = max((c.audit_id for c in proven), default=0)
    for row in audit_rows:
        if row["id"] > covered_audit:
            return Finding(
                "row",
                row["id"],
                row.get("timestamp"),
                "it is covered by no signed checkpoint: appended after the last signed run "
                "ended (forged), or by a run that has not ended",
            )
    if not proven and at_revision:
        return Finding(
            "database",
            None,
            None,
            "it is at a revision but holds no signed checkpoint: no run has signed its "
            "trail yet (run one, or `orchestrator keys adopt`), or the trail was removed",
        )
    return None
