"""Runs that started and never ended (killed): found under the lock and recorded as
interrupted on their own behalf, with the audit events of the revisions they committed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.evidence import ledger
from orchestrator.evidence.audit import AuditTrail
from orchestrator.running.liveness import live_run_ids, run_alive

if TYPE_CHECKING:
    from orchestrator.running.run import TargetRun


def close_dead_runs(run: TargetRun) -> list[str]:
    """Under the lock: runs that started and never ended are dead; record them."""
    with run.reading() as connection:
        open_runs = [r for r in ledger.runs_without_end(connection) if r["run_id"] != run.run_id]
        if not open_runs:
            return []
        held = ledger.acquired_runs(connection, [r["run_id"] for r in open_runs])
        live = live_run_ids(connection)
    # Without a live view (SQLite), a run that took the lock we now hold is dead: a file
    # lock ends only with its process. On PostgreSQL a live run may have lost its lock
    # (its lock session ended); it cannot commit any more and records its own end.
    dead = [
        r for r in open_runs if not run_alive(r, live) or (live is None and r["run_id"] in held)
    ]
    for one in dead:
        _close_dead_run(run, one)
    return [r["run_id"] for r in dead]


def _close_dead_run(run: TargetRun, dead_run: Mapping[str, Any]) -> None:
    """Record a dead run's end on its own behalf (its run id, its actor), first writing
    the audit events of the revisions its ledger shows it committed: a run killed
    mid-way had them queued, not yet written."""
    trail = AuditTrail(
        env=run.env.name,
        run_id=dead_run["run_id"],
        actor=dead_run.get("actor") or "unknown",
        engine=run.engine,
        file=run.app.settings.audit_file,
        target=dead_run.get("target"),
        command=dead_run.get("command"),
        noticed_by=run.run_id,
    )
    with run.reading() as connection:
        rows = ledger.ledger_rows(connection, dead_run["run_id"])
        known = ledger.audited_revisions(connection, dead_run["run_id"]) if rows else set()
    for row in rows:
        if row["revision"] not in known and row["direction"] != "baseline":
            trail.emit(
                "migration.applied" if row["direction"] == "up" else "migration.reverted",
                defer=True,
                revision=row["revision"],
                checksum=row["checksum"],
                applied_at=row["at"],
            )
    trail.emit(
        "run.interrupted",
        outcome="interrupted",
        reason=f"started {dead_run['timestamp']} by pid {dead_run.get('pid')} and never finished",
    )
