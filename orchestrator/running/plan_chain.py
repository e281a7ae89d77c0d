"""A release plan's evidence of a signing predecessor, as a segment of its evidence chain:
what `plan --out` carries (every stored entry from the oldest planned revision's newest entry
to the head it witnessed), how the applying job verifies it with the predecessor's key alone
(core/chain.py's verifier, as the gate verifies a chain it reads), and, where the job can
read the predecessor, that its chain still extends that head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.evidence.plans import Plan
from orchestrator.running.app import App


def behind_the_plan(app: App, plan: Plan) -> list[str]:
    """Each predecessor database whose chain, read now, does not verify or no longer
    extends the head the plan witnessed (rolled back below it, or diverging from it)."""
    from orchestrator.evidence import chain as store
    from orchestrator.running.predecessor import believed, read_connection

    predecessor = app.envs.get(plan.env).promotes_from
    keys = app.environment(predecessor).public_keys if predecessor else None
    if predecessor is None or not keys:
        return []
    causes = []
    for target in app.environment(predecessor).targets:
        witnessed = _plan_head(plan, target.name, predecessor)
        if witnessed is None:  # not in the plan: plan_evidence refuses it already
            continue
        with read_connection(target) as connection:
            database = store.database_identity(connection)
            if database != witnessed.database:
                causes.append(
                    f"{predecessor}/{target.name} is not the database the plan's evidence "
                    f"came from ({witnessed.database}, {database} now)"
                )
                continue
            seen_by = f"the plan {plan.sha256[:12]}"
            problem = believed(connection, keys, predecessor, {database: witnessed}, seen_by)[0]
        if problem is not None:
            causes.append(problem)
    return causes


def plan_chain(
    plan: Plan, name: str, predecessor: str, keys: Sequence[Any], witnessed: Mapping[str, Any]
) -> tuple[str | None, dict[str, tuple[str, str, str]], dict[str, Any] | None]:
    """The plan's segment of one predecessor database's chain, verified as the gate
    verifies a chain it reads: why it cannot be believed, else per revision its newest
    entry, and the head the plan witnessed."""
    from orchestrator.core import chain as pure
    from orchestrator.running.predecessor import proven_rows

    where = f"{predecessor}/{name}"
    head = _plan_head(plan, name, predecessor)
    segment = (plan.body.get("evidence_chain") or {}).get(name)
    if head is None or not isinstance(segment, dict):
        return (
            f"the plan {plan.sha256[:12]} carries no verified evidence chain of {where} "
            "(written by an earlier release, or altered): make a new plan with "
            f"`orchestrator plan {plan.env} --out FILE`",
            {},
            None,
        )
    rows: Any = segment.get("entries")
    start: Any = segment.get("start")
    if not _entry_rows(rows) or not _seq_hash(start):  # never none: the newest is signed
        return f"the plan's evidence chain of {where} is not a list of entries", {}, None
    verdict = pure.verify_chain(
        rows,
        keys,
        env=predecessor,
        database=head.database,
        start=(start["seq"], start["hash"]),
    )
    if verdict.broken is not None:
        seq, why = verdict.broken
        return f"the plan's evidence of {where} does not verify at entry {seq}: {why}", {}, None
    if verdict.head != (head.seq, head.hash):
        return (
            f"the plan's evidence of {where} does not end at the head it names (entry {head.seq})",
            {},
            None,
        )
    seen = witnessed.get(head.database)
    if seen is not None and pure.witnessed_problem(verdict, seen, predecessor, "") is not None:
        return (
            f"the plan's evidence of {where} ends at entry {head.seq}, older than or "
            f"diverging from entry {seen.seq}, which this database's own runs saw"
            + (f" on {seen.at[:10]}" if seen.at else "")
            + ": make a new plan",
            {},
            None,
        )
    return None, proven_rows(verdict), head.as_dict()


def _plan_head(plan: Plan, name: str, predecessor: str) -> Any:
    """The predecessor database's chain head the plan witnessed (a chain.Head), or None."""
    from orchestrator.core import chain as pure

    raw = (plan.body.get("evidence_chain") or {}).get(name)
    head = raw.get("head") if isinstance(raw, dict) else None
    if not isinstance(head, dict) or head.get("env") != predecessor or not _seq_hash(head):
        return None
    if not isinstance(head.get("database"), str):
        return None
    at = plan.body.get("created_at")
    return pure.Head(
        predecessor,
        head["database"],
        head["seq"],
        head["hash"],
        at if isinstance(at, str) else None,
    )


def _seq_hash(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("seq"), int)
        and not isinstance(value.get("seq"), bool)
        and isinstance(value.get("hash"), str)
    )


def _entry_rows(rows: Any) -> bool:
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(
            isinstance(r, dict)
            and isinstance(r.get("seq"), int)
            and isinstance(r.get("kind"), str)
            and isinstance(r.get("envelope"), str)
            for r in rows
        )
    )


def chain_segment(connection: Any, keys: Sequence[Any], env: str, revisions: Sequence[str]) -> Any:
    """What `plan --out` carries of one predecessor database's chain: every stored entry
    from the oldest planned revision's newest entry to the head, with the entry before
    (seq, hash) it links to; None where the chain does not verify (the gate refused)."""
    from orchestrator.core import chain as pure
    from orchestrator.evidence import chain as store

    evidence = store.read_evidence(connection, keys, env)
    head = evidence.head()
    if evidence.problem is not None or head is None:
        return None
    newest = {
        str(row.get("revision")): int(row["seq"]) for row in pure.ledger_rows(evidence.verdict)
    }
    first = min((newest[r] for r in revisions if r in newest), default=head.seq)
    hashes = {e.seq: e.hash for e in evidence.verdict.entries}
    return {
        "head": head.as_dict(),
        "start": {"seq": first - 1, "hash": hashes.get(first - 1, pure.GENESIS)},
        "entries": [
            {k: row[k] for k in ("seq", "kind", "run_id", "envelope")}
            for row in evidence.rows
            if first <= row["seq"] <= head.seq
        ],
    }
