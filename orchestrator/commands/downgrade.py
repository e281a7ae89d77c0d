"""downgrade and baseline: runs that move a database back, or adopt the revision it is at."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import Connection

from orchestrator.commands.migrate import Options
from orchestrator.core.config import Target
from orchestrator.core.errors import LockLost, OrchestratorError, UsageError
from orchestrator.core.logging import utc_now
from orchestrator.core.planning import LedgerEntry
from orchestrator.core.results import RunResult, attach_results, error_result
from orchestrator.evidence import ledger
from orchestrator.migrations.revisions.errors import RevisionsError
from orchestrator.running.app import App, revision_error
from orchestrator.running.policies import check_approval
from orchestrator.running.run import TargetRun


def downgrade(
    app: App, env_name: str, to: str, reason: str, force: bool, options: Options
) -> list[RunResult]:
    env = app.environment(env_name)
    if not reason.strip():
        raise UsageError("A downgrade needs --reason TEXT: it goes on the audit trail.")
    env.signer  # noqa: B018 -- its key first: exit 2, nothing written
    results: list[RunResult] = []
    for target in env.targets:
        try:
            results.append(_downgrade_target(app, target, to, reason, force, options))
        except OrchestratorError as exc:
            attach_results(exc, results)
            raise
    return results


def _downgrade_target(
    app: App, target: Target, to: str, reason: str, force: bool, options: Options
) -> RunResult:
    run = TargetRun(
        app,
        target,
        "downgrade",
        ticket=options.ticket,
        reason=reason,
        lock_timeout=options.lock_timeout,
    )
    try:
        state = run.read()
        destination = _downgrade_destination(app, state.heads, to)
        run.start(
            from_revision=",".join(state.heads) or None,
            to_revision=destination,
            forced=force or None,
        )
        if not run.env.policy.allow_downgrade and not force:
            run.refuse(
                f"Refused: downgrades are not allowed on {run.env.name} (policy.allow_downgrade "
                "is false). If you must, re-run with --force; the reason is recorded."
            )
        check_approval(
            app, run, options.approve, _revert_path(app, state.heads, destination), "down"
        )
        with run.locked():
            run.close_dead_runs()
            state = run.read()
            destination = _downgrade_destination(app, state.heads, to)
            revisions = _revert_path(app, state.heads, destination)
            if not revisions:
                return run.finish(message="nothing to revert")
            project = app.project

            def execute(connection: Connection, hook: Callable[..., None]) -> None:
                project.run(connection, revisions, "down", hook)

            run.apply(revisions, "down", execute)
            return run.finish(to_revision=destination)
    except OrchestratorError as exc:
        run.fail_details(exc)
        failed = error_result(run.env.name, target.name, run.run_id, exc, run.applied)
        failed.audit_head = run.audit.head
        failed.evidence_head = run.evidence.head() if run.evidence is not None else None
        attach_results(exc, [failed])
        raise
    finally:
        run.close()


def _downgrade_destination(app: App, heads: Sequence[str], to: str) -> str:
    try:
        if to.startswith("-") or to.startswith("+"):
            return app.graph.resolve_relative(heads, to)
        return app.graph.resolve(to)
    except RevisionsError as exc:
        raise UsageError(revision_error(exc)) from None


def _revert_path(app: App, heads: Sequence[str], destination: str) -> list[str]:
    try:
        return app.graph.downgrade_path(heads, destination)
    except RevisionsError as exc:
        raise UsageError(revision_error(exc)) from None


def baseline(app: App, env_name: str, revision: str, reason: str) -> list[RunResult]:
    env = app.environment(env_name)
    if not reason.strip():
        raise UsageError("A baseline needs --reason TEXT: it goes on the audit trail.")
    rev = app.resolve(revision)
    env.signer  # noqa: B018 -- its key first: exit 2, nothing written
    results = []
    for target in env.targets:
        run = TargetRun(app, target, "baseline", reason=reason)
        try:
            run.start(to_revision=rev)
            with run.locked():
                state = run.read()
                if state.heads and state.heads != (rev,):
                    run.refuse(
                        f"Refused: {run.where} is at {', '.join(state.heads)}, not {rev}. "
                        "Baseline adopts the revision a database is at; name that one."
                    )
                chain = sorted(app.graph.ancestors(rev), key=lambda r: len(app.graph.ancestors(r)))
                _refuse_rerecording(app, run, state.ledger, chain)
                # rows the ledger already holds with this very checksum stay as they are: a
                # baseline never turns `accepted` (not run) into evidence of a run
                fresh = [
                    r for r in chain if not ((e := state.ledger.get(r)) is not None and e.applied)
                ]
                with run.engine.begin() as connection:
                    if not state.heads:
                        app.project.stamp(connection, rev)
                    for r in fresh:
                        row = ledger.revision_row(
                            revision=r,
                            checksum=app.graph.get(r).checksum,
                            direction="baseline",
                            run_id=run.run_id,
                            env=run.env.name,
                            actor=app.actor,
                            at=utc_now(),
                            key=run.key,
                            target=run.target.name,
                        )
                        if not run.record_row(connection, row, fence=run.fence):
                            raise LockLost(
                                f"This run lost the migration lock on {run.where} before the "
                                "baseline could commit: nothing was recorded. Run it again."
                            )
                run.applied = fresh
                results.append(
                    run.finish(
                        to_revision=rev,
                        baselined=len(fresh),
                        schema_fingerprint=run.record_schema(),
                    )
                )
        except OrchestratorError as exc:
            run.fail_details(exc)
            own = error_result(run.env.name, target.name, run.run_id, exc)
            own.audit_head = run.audit.head
            attach_results(exc, [*results, own])
            raise
        finally:
            run.close()
    return results


def _refuse_rerecording(
    app: App, run: TargetRun, recorded: Mapping[str, LedgerEntry], chain: Sequence[str]
) -> None:
    """Baseline records what a database ran; it never re-records an edited file."""
    edited = [
        (r, entry.checksum, app.graph.get(r).checksum)
        for r in chain
        if (entry := recorded.get(r)) is not None
        and entry.applied
        and entry.checksum != app.graph.get(r).checksum
    ]
    if edited:
        detail = "; ".join(
            f"{r} (recorded {old[:12]}, file now {new[:12]})" for r, old, new in edited
        )
        run.refuse(
            f"Refused: {run.where}'s ledger already records {len(edited)} of these revisions "
            f"with another checksum: {detail}. Baseline never re-records an edited file. "
            f"Restore the file as it ran, or re-record it, audited and approved, with "
            f"`orchestrator accept {run.env.name} --revision REV --reason TEXT`.",
            edited=[r for r, _, _ in edited],
        )
