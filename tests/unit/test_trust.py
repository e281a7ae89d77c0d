"""The pure checks behind signed evidence: ledger rows and audit checkpoints, inline data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.core import planning, signing, trust
from orchestrator.evidence import ledger

KEY = Ed25519PrivateKey.generate()
KEYS = [KEY.public_key()]


def ledger_row(i: int, rev: str, run_id: str = "run1", sign: bool = True, **over: Any) -> dict:
    row = {
        "id": i,
        "revision": rev,
        "checksum": "c" * 64,
        "direction": "up",
        "run_id": run_id,
        "env": "staging",
        "actor": "ci",
        "at": f"2026-01-01T00:00:0{i}Z",
        "envelope": None,
    }
    if sign:
        payload = trust.ledger_payload(row, over.pop("target", "staging"))
        row["envelope"] = json.dumps(signing.sign(trust.LEDGER_TYPE, payload, KEY))
    row.update(over)
    return row


def audit_rows(count: int, run_id: str = "run1") -> list[dict]:
    records = [
        {
            "timestamp": f"2026-01-01T00:00:{i:02d}Z",
            "event": "run.started",
            "run_id": run_id,
            "env": "staging",
            "actor": "ci",
        }
        for i in range(count)
    ]
    return ledger.chain_rows(records, 0, ledger.GENESIS)


def checkpoint(i: int, audit: dict, ledger_id: int, signed_from: int | None = 1, **over: Any):
    fields = {
        "env": "staging",
        "target": "staging",
        "run_id": audit["run_id"],
        "audit_id": audit["id"],
        "audit_hash": audit["hash"],
        "ledger_id": ledger_id,
        "ledger_signed_from": signed_from,
        "at": "2026-01-01T00:01:00Z",
    }
    fields.update(over)
    envelope = signing.sign(trust.CHECKPOINT_TYPE, trust.checkpoint_payload(**fields), KEY)
    return {
        "id": i,
        "run_id": fields["run_id"],
        "audit_id": audit["id"],
        "audit_hash": audit["hash"],
        "at": fields["at"],
        "envelope": json.dumps(envelope),
    }


def check(audit: list[dict], checkpoints: list[dict], rows: list[dict], **kw: Any):
    assert ledger.verify_chain(audit) is None  # these attacks all keep the chain valid
    return trust.verify_signed_trail(
        audit_rows=audit,
        checkpoints=checkpoints,
        ledger_rows=rows,
        keys=KEYS,
        env="staging",
        target="staging",
        at_revision=kw.pop("at_revision", True),
        **kw,
    )


def test_an_intact_signed_trail_verifies() -> None:
    audit = audit_rows(5)
    rows = [ledger_row(1, "a"), ledger_row(2, "b")]
    assert check(audit, [checkpoint(1, audit[-1], 2)], rows) is None


def test_edit_and_rehash_is_named_at_the_checkpoint() -> None:
    audit = audit_rows(5)
    cps = [checkpoint(1, audit[2], 1), checkpoint(2, audit[-1], 1)]
    records = [json.loads(r["payload"]) for r in audit]
    records[1]["actor"] = "mallory"
    forged = ledger.chain_rows(records, 0, ledger.GENESIS)
    found = check(forged, cps, [ledger_row(1, "a")])
    assert found is not None and (found.kind, found.id) == ("checkpoint", 1)
    assert "edited and re-hashed" in found.problem


def test_truncated_or_dropped_audit_table() -> None:
    audit = audit_rows(5)
    cps = [checkpoint(1, audit[-1], 1)]
    found = check(audit[:3], cps, [ledger_row(1, "a")])
    assert found is not None and found.kind == "checkpoint" and "gone" in found.problem
    found = check([], cps, [ledger_row(1, "a")])
    assert found is not None and found.kind == "checkpoint"
    found = check([], [], [ledger_row(1, "a")])  # checkpoints dropped too
    assert found is not None and (found.kind, found.id) == ("ledger row", 1)
    found = check([], [], [])  # everything dropped, alembic_version left
    assert found is not None and found.kind == "database"
    assert check([], [], [], at_revision=False) is None  # a database nothing ever ran on


def test_forged_rows_past_the_last_checkpoint() -> None:
    audit = audit_rows(5)
    cps = [checkpoint(1, audit[2], 1)]
    found = check(audit, cps, [ledger_row(1, "a")])
    assert found is not None and (found.kind, found.id) == ("row", 4)
    assert check(audit, [*cps, checkpoint(2, audit[-1], 1)], [ledger_row(1, "a")]) is None


def test_ledger_rows_deleted_or_stripped_of_their_signature() -> None:
    audit = audit_rows(3)
    rows = [ledger_row(1, "a"), ledger_row(2, "b"), ledger_row(3, "c")]
    cps = [checkpoint(1, audit[-1], 3)]
    found = check(audit, cps, rows[:2])
    assert found is not None and "ledger rows up to id 3" in found.problem
    stripped = [rows[0], {**rows[1], "envelope": None}, rows[2]]
    found = check(audit, cps, stripped)
    assert found is not None and (found.kind, found.id) == ("ledger row", 2)
    all_stripped = [{**r, "envelope": None} for r in rows]
    found = check(audit, cps, all_stripped)  # the checkpoint remembers signing began at 1
    assert found is not None and (found.kind, found.id) == ("ledger row", 1)
    # rows that predate signing stay unsigned evidence, not a broken trail
    legacy = [ledger_row(1, "a", sign=False), ledger_row(2, "b"), ledger_row(3, "c")]
    assert check(audit, [checkpoint(1, audit[-1], 3, signed_from=2)], legacy) is None


def test_checkpoint_with_the_wrong_key_or_for_another_database() -> None:
    audit = audit_rows(2)
    other = {**checkpoint(1, audit[-1], 1)}
    wrong = signing.sign(
        trust.CHECKPOINT_TYPE, b"{}", Ed25519PrivateKey.generate()
    )  # signed, by someone else
    found = check(audit, [{**other, "envelope": json.dumps(wrong)}], [ledger_row(1, "a")])
    assert found is not None and found.kind == "checkpoint" and "signature" in found.problem
    elsewhere = checkpoint(1, audit[-1], 1, target="staging-eu")
    found = check(audit, [elsewhere], [ledger_row(1, "a")])
    assert found is not None and "signed for staging/staging-eu" in found.problem


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"checksum": "d" * 64}, "its checksum differs from what was signed"),
        ({"direction": "baseline"}, "its direction differs"),
        ({"revision": "z"}, "its revision differs"),
        ({"envelope": None}, "it is not signed"),
        ({"envelope": "{}"}, "its signature does not verify"),
    ],
)
def test_a_ledger_row_counts_only_as_signed(change: dict, problem: str) -> None:
    row = {**ledger_row(1, "a"), **change}
    assert problem in (trust.ledger_row_problem(row, KEYS, "staging", "staging") or "")


def test_a_row_signed_for_another_database_does_not_count() -> None:
    row = ledger_row(1, "a", target="staging-eu")
    assert "copied from another database" in (
        trust.ledger_row_problem(row, KEYS, "staging", "staging") or ""
    )
    assert trust.ledger_row_problem(row, KEYS, "staging", "staging-eu") is None


def _entry(row: dict) -> planning.LedgerEntry:
    return planning.LedgerEntry(
        row["revision"],
        row["checksum"],
        row["direction"],
        row["run_id"],
        row["at"],
        env=row["env"],
        actor=row["actor"],
        envelope=row["envelope"],
    )


def test_the_gate_with_a_signing_predecessor() -> None:
    good, forged = ledger_row(1, "a"), {**ledger_row(2, "b"), "checksum": "e" * 64}
    accepted_signed = ledger_row(3, "c", sign=False, direction="accepted")
    payload = trust.ledger_payload(accepted_signed, "staging")
    accepted_signed["envelope"] = json.dumps(signing.sign(trust.LEDGER_TYPE, payload, KEY))
    entries = {r["revision"]: _entry(r) for r in (good, forged, accepted_signed)}
    state = planning.TargetState(
        "staging", frozenset({"a", "b", "c"}), entries, tuple(KEYS), "staging"
    )
    sums = {"a": "c" * 64, "b": "e" * 64, "c": "c" * 64}
    steps = {s.revision: s for s in planning.gate(["a", "b", "c"], sums, "staging", [state])}
    assert steps["a"].verdict == "allowed"
    assert steps["b"].blocked and steps["b"].reason.startswith("not signed by staging's key")
    assert steps["c"].blocked and steps["c"].reason.startswith("accepted on staging (not run)")
    unsigned = planning.TargetState("staging", state.applied, entries, None, "staging")
    steps = {s.revision: s for s in planning.gate(["a", "b"], sums, "staging", [unsigned])}
    assert not steps["a"].blocked and not steps["b"].blocked  # today's behaviour: trusted


def test_the_gate_words_a_signed_predecessor_s_reasons_exactly() -> None:
    """A reason is a template (`{where}`): the braces of a row's own values stay as they are."""
    elsewhere = ledger_row(1, "a", target="st{a}ge")  # signed for another database
    accepted = ledger_row(2, "b", sign=False, direction="accepted")
    payload = trust.ledger_payload(accepted, "staging")
    accepted["envelope"] = json.dumps(signing.sign(trust.LEDGER_TYPE, payload, KEY))
    entries = {r["revision"]: _entry(r) for r in (elsewhere, accepted)}
    state = planning.TargetState("staging", frozenset({"a", "b"}), entries, tuple(KEYS), "staging")
    steps = planning.gate(["a", "b"], {"a": "c" * 64, "b": "c" * 64}, "staging", [state])
    assert [s.reason for s in steps] == [
        "not signed by staging's key (its ledger row for it: it was signed for "
        "staging/st{a}ge, not staging/staging (copied from another database))",
        "accepted on staging (not run): its checksum was re-recorded there with "
        "`orchestrator accept`, the edited file never ran; run it on staging first",
    ]
