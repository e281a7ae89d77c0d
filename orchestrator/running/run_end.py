"""A signing run's end: the signed checkpoint over the audit chain's head and its signed end
entry, in one transaction of two round trips where it can (RunEvidence.end_at_once), else one
after the other. Never over audit rows it cannot prove; a failure is logged, not raised (the
next run's end covers what this one could not)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.logging import utc_now
from orchestrator.db.database import describe_error
from orchestrator.evidence import ledger
from orchestrator.evidence.audit import FINAL_WAIT
from orchestrator.running.liveness import live_run_ids

if TYPE_CHECKING:
    from orchestrator.running.run import TargetRun


def sign_end(run: TargetRun, exc: BaseException | None) -> None:
    """The end of a run that started, where its environment signs (TargetRun.close): the
    audit records still pending (its lock.released) go in the end's own transaction, or
    are written first where that cannot be."""
    if not _end_at_once(run, exc):
        run.audit.flush(wait=FINAL_WAIT)
        _checkpoint(run)
        _end_evidence(run, exc)


def _outcome(run: TargetRun, exc: BaseException | None) -> str | None:
    outcome = run.result.outcome if run.result is not None else None
    if outcome is None and exc is not None:
        outcome = getattr(exc, "outcome", "failed")
    return outcome


def _end_at_once(run: TargetRun, exc: BaseException | None) -> bool:
    """The checkpoint and the signed end entry in one transaction of two round trips
    (RunEvidence.end_at_once); False where that cannot be done: then one by one."""
    if run.evidence is None or not run.audit.tables_ready:
        return False
    assert run.signer is not None
    checkpoint = partial(
        ledger.checkpoint_row,
        key=run.signer.key,
        env=run.env.name,
        target=run.target.name,
        run_id=run.run_id,
        at=utc_now(),
    )
    try:
        with run.reading() as connection:
            problem = run.evidence.end_at_once(
                connection, _outcome(run, exc), checkpoint, utc_now(), run.audit
            )
    except SQLAlchemyError as error:
        problem = describe_error(error)
    if problem is None:
        return False
    if problem:  # nothing of that transaction stays: the pending records go on their own
        run.audit.flush(wait=FINAL_WAIT)
        run.audit.log.error("evidence.end_not_signed", env=run.env.name, error=problem)
    return True


def _checkpoint(run: TargetRun) -> None:
    assert run.signer is not None
    try:
        with run.engine.begin() as connection:
            ledger.write_checkpoint(
                connection,
                key=run.signer.key,
                env=run.env.name,
                target=run.target.name,
                run_id=run.run_id,
                at=utc_now(),
            )
    except SQLAlchemyError as exc:  # the next run's checkpoint covers these rows
        run.audit.log.error("audit.checkpoint_failed", error=describe_error(exc))


def _end_evidence(run: TargetRun, exc: BaseException | None) -> None:
    """The run's signed end entry, over the audit rows it can prove; never over others."""
    if run.evidence is None:
        return
    try:
        with run.reading() as connection:
            live = live_run_ids(connection)
    except SQLAlchemyError:
        live = None
    problem = run.evidence.end(run.engine, utc_now(), _outcome(run, exc), live)
    if problem:
        run.audit.log.error("evidence.end_not_signed", env=run.env.name, error=problem)
