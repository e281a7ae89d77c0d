"""accept: the one audited, approval-gated way to re-record the checksum of a revision that
a database already ran, after its file was edited."""

from __future__ import annotations

from orchestrator.commands.migrate import Options
from orchestrator.core.config import Target
from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.logging import utc_now
from orchestrator.core.results import RunResult
from orchestrator.evidence import ledger
from orchestrator.running.app import App
from orchestrator.running.policies import check_approval
from orchestrator.running.run import TargetRun


def accept(
    app: App, env_name: str, revision: str, reason: str, options: Options
) -> list[RunResult]:
    env = app.environment(env_name)
    if not reason.strip():
        raise UsageError("accept needs --reason TEXT: it goes on the audit trail.")
    rev = app.resolve(revision)
    targets = env.targets
    env.signer  # noqa: B018 -- its key first: exit 2, nothing written
    return [_accept_target(app, target, rev, reason, options) for target in targets]


def _accept_target(app: App, target: Target, rev: str, reason: str, options: Options) -> RunResult:
    run = TargetRun(
        app,
        target,
        "accept",
        ticket=options.ticket,
        reason=reason,
        lock_timeout=options.lock_timeout,
    )
    new = app.graph.get(rev).checksum
    try:
        old = _recorded_checksum(run, rev)
        if old == new:
            return RunResult(
                run.env.name, target.name, run.run_id, "succeeded", message="nothing to accept"
            )
        run.start(revision=rev, old_checksum=old, new_checksum=new)
        check_approval(app, run, options.approve)
        with run.locked():
            run.close_dead_runs()
            old = _recorded_checksum(run, rev)  # another run may have re-recorded it meanwhile
            if old == new:
                return run.finish(message="nothing to accept")
            with run.engine.begin() as connection:
                row = ledger.revision_row(
                    revision=rev,
                    checksum=new,
                    direction="accepted",
                    run_id=run.run_id,
                    env=run.env.name,
                    actor=app.actor,
                    at=utc_now(),
                    key=run.key,
                    target=target.name,
                )
                run.record_row(connection, row)
                run.audit.emit(
                    "checksum.accepted",
                    connection=connection,
                    revision=rev,
                    old_checksum=old,
                    new_checksum=new,
                    checksum=new,
                )
            done = run.finish(revision=rev, schema_fingerprint=run.record_schema())
            done.message = f"accepted {rev} on {run.where} (checksum {old[:12]} -> {new[:12]})"
            return done
    except OrchestratorError as exc:
        run.fail_details(exc)
        raise
    finally:
        run.close()


def _recorded_checksum(run: TargetRun, rev: str) -> str:
    state = run.read()
    entry = state.ledger.get(rev)
    if rev not in state.applied:
        raise UsageError(
            f"{rev} is not applied on {run.where}: there is nothing to accept. "
            f"`orchestrator migrate {run.env.name}` runs it."
        )
    if entry is None or not entry.applied:
        raise UsageError(
            f"{rev} is applied on {run.where} but not recorded in its ledger (migrated outside "
            f"the orchestrator): adopt it with `orchestrator baseline {run.env.name} "
            "--revision REV --reason TEXT`."
        )
    return entry.checksum
